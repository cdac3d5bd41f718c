"""A venv that holds exactly one lock file, reused only while it still does.

    python3 scripts/locked_venv.py ensure --lock requirements/label-studio-1.23.2.lock --venv DIR
    python3 scripts/locked_venv.py check  --lock LOCK --venv DIR     # exit 1 and say why if not
    python3 scripts/locked_venv.py describe --lock LOCK --venv DIR   # for an error message
    python3 scripts/locked_venv.py strays --venv .venv --lock A --lock B ... [--own NAME]
                                    # exit 1 naming what no lock pins (scripts/install.sh's .venv)

A venv counts as built from a lock when its marker file holds the lock's sha256 and the packages
installed in it are exactly the lock's pins (names and versions; the venv's own pip, and the
setuptools that `python -m venv` seeds when the lock has none, aside). Anything else — no marker,
a marker of another lock (the lock changed), a package added, removed or of another version —
and `ensure` removes the venv and builds it again: `python -m venv`, the lock's own setuptools
and wheel, then `pip install --no-deps --require-hashes --no-build-isolation -r LOCK` (pip
resolves nothing and checks every file against its hash; the lock's few source distributions are
built with those locked build tools, not with whatever an index serves), then `pip check`, then
the comparison once more, and only then the marker. A lock file held during the build serialises
concurrent calls (parallel test runs). Standard library only: it runs with the interpreter that
will own the venv, before any venv exists.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

MARKER = ".sam2plus-lock"  # inside the venv: the sha256 of the lock it was built from
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s+--hash=sha256:[0-9a-f]{64}")
SEEDS = ("pip", "setuptools")  # what `python -m venv` puts in a venv by itself
BUILD_TOOLS = ("setuptools", "wheel")  # installed from the lock before the rest: they build its sdists
INSTALL_TIMEOUT = 1800
LISTING = (
    "import importlib.metadata as m, json;"
    "print(json.dumps(sorted([d.metadata['Name'], d.version] for d in m.distributions())))"
)


def canonical(name: str) -> str:
    """A package name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_digest(lock: Path) -> str:
    """The sha256 of the lock file's bytes: what the venv's marker holds."""
    return hashlib.sha256(lock.read_bytes()).hexdigest()


def lock_pins(text: str) -> dict[str, str]:
    """Canonical name -> version of every pin of a lock (comments and blank lines left out; any
    other line is an error naming it)."""
    pins = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PIN.fullmatch(line.strip())
        if match is None:
            raise ValueError(f"not an exact, hashed pin: {line!r}")
        pins[canonical(match[1])] = match[2]
    return pins


def _pinned_name(line: str) -> str | None:
    match = PIN.fullmatch(line.strip())
    return None if match is None else canonical(match[1])


def differences(pins: dict[str, str], installed: list[tuple[str, str]]) -> list[str]:
    """What keeps `installed` (name, version pairs as the venv lists them) from being exactly `pins`."""
    found: dict[str, list[str]] = {}
    for name, version in installed:
        found.setdefault(canonical(name), []).append(version)
    problems = []
    for name, versions in sorted(found.items()):
        if name in SEEDS and name not in pins:
            continue
        if len(versions) > 1:
            problems.append(f"{name} installed twice ({', '.join(versions)})")
        elif name not in pins:
            problems.append(f"{name}=={versions[0]} is not in the lock")
        elif versions[0] != pins[name]:
            problems.append(f"{name}=={versions[0]} where the lock has {pins[name]}")
    problems += [f"{name}=={version} is missing" for name, version in sorted(pins.items()) if name not in found]
    return problems


def strays(pins: dict[str, str], installed: list[tuple[str, str]], own: tuple[str, ...] = ()) -> list[str]:
    """What `installed` holds that `pins` do not (at that version), its own packages and the venv's
    seeds aside; pins not installed are no strays (a venv may hold part of several locks)."""
    return [
        problem
        for problem in differences(pins, [(n, v) for n, v in installed if canonical(n) not in own])
        if not problem.endswith(" is missing")
    ]


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def installed_packages(venv: Path) -> list[tuple[str, str]]:
    """The distributions installed in `venv`, asked of its own interpreter."""
    listing = subprocess.run(
        [venv_python(venv), "-c", LISTING], capture_output=True, text=True, timeout=120, check=True
    )
    return [tuple(pair) for pair in json.loads(listing.stdout)]


def problems(lock: Path, venv: Path) -> list[str]:
    """Why `venv` is not a venv built from `lock` (empty when it is)."""
    marker = venv / MARKER
    if not venv_python(venv).exists():
        return [f"{venv} is no venv"]
    if not marker.exists():
        return [f"{venv} has no {MARKER} (never finished building)"]
    built_from, wanted = marker.read_text().strip(), lock_digest(lock)
    if built_from != wanted:
        return [f"{venv} was built from another lock (sha256 {built_from[:12]}, {lock.name} is {wanted[:12]})"]
    try:
        return differences(lock_pins(lock.read_text()), installed_packages(venv))
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        return [f"{venv}: its packages cannot be listed ({exc})"]


def build(lock: Path, venv: Path, python: str) -> None:
    """Make `venv` anew from `lock`; the marker is written last, so an interrupted build is redone."""
    if venv.exists():
        if not (venv / "pyvenv.cfg").exists():
            raise SystemExit(f"locked_venv: {venv} exists and is not a venv; choose another folder")
        shutil.rmtree(venv)
    print(f"locked_venv: building {venv} from {lock} (a few minutes)", file=sys.stderr)
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    python_in_venv = str(venv_python(venv))
    # The lock's own build tools first, so that its source distributions are built with them.
    tools = venv / "build-tools.lock"
    tools.write_text(
        "".join(line + "\n" for line in lock.read_text().splitlines() if _pinned_name(line) in BUILD_TOOLS)
    )
    for requirements in (tools, lock):
        install = [
            *(python_in_venv, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            *("--no-deps", "--require-hashes", "--no-build-isolation", "-r", str(requirements)),
        ]
        subprocess.run(install, check=True, timeout=INSTALL_TIMEOUT)
    tools.unlink()
    subprocess.run([python_in_venv, "-m", "pip", "check"], check=True, timeout=300)
    (venv / MARKER).write_text(lock_digest(lock) + "\n")
    left = problems(lock, venv)
    if left:
        (venv / MARKER).unlink()
        raise SystemExit(f"locked_venv: {venv} does not match {lock} after installing it: " + "; ".join(left))


def ensure(lock: Path, venv: Path, python: str) -> bool:
    """Reuse `venv` if it holds exactly `lock`, else build it; True when it was built."""
    if not problems(lock, venv):
        return False
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{venv}.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        found = problems(lock, venv)
        if not found:
            return False  # built by a concurrent call while this one waited
        if (venv / "pyvenv.cfg").exists():
            print(f"locked_venv: rebuilding {venv}: {'; '.join(found)}", file=sys.stderr)
        build(lock, venv, python)
        return True


def describe(lock: Path, venv: Path) -> str:
    """Which lock the venv was built from, whether it still matches, and what `pip check` says."""
    marker = venv / MARKER
    built_from = marker.read_text().strip() if marker.exists() else "nothing (no marker)"
    lines = [f"venv {venv}: built from lock sha256 {built_from}; {lock} is sha256 {lock_digest(lock)}"]
    found = problems(lock, venv)
    lines.append("matches the lock" if not found else "does not match the lock: " + "; ".join(found))
    if venv_python(venv).exists():
        check = subprocess.run(
            [venv_python(venv), "-m", "pip", "check"], capture_output=True, text=True, timeout=300, check=False
        )
        lines.append("pip check: " + (check.stdout + check.stderr).strip().replace("\n", "; "))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("ensure", "check", "describe", "strays"))
    parser.add_argument("--lock", type=Path, required=True, action="append", help="one; several for strays")
    parser.add_argument("--venv", type=Path, required=True)
    parser.add_argument("--python", default=sys.executable, help="the interpreter of a new venv (default: this one)")
    parser.add_argument("--own", action="append", default=[], help="strays: a package of the venv's own project")
    args = parser.parse_args(argv)
    if args.command == "strays":
        pins = {name: version for lock in args.lock for name, version in lock_pins(lock.read_text()).items()}
        found = strays(pins, installed_packages(args.venv), tuple(canonical(name) for name in args.own))
    elif len(args.lock) > 1:
        parser.error(f"{args.command} takes one --lock")
    elif args.command == "ensure":
        ensure(args.lock[0], args.venv, args.python)
        return 0
    elif args.command == "describe":
        print(describe(args.lock[0], args.venv))
        return 0
    else:
        found = problems(args.lock[0], args.venv)
    for problem in found:
        print(f"locked_venv: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
