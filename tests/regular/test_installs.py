"""Everything the project installs comes from a lock: Label Studio's venvs too (docs/tests.md: The lock).

A fresh machine once failed where the developers' did not: Label Studio's venv was installed with
only `label-studio==V` pinned, pip took sentry-sdk 3 on the day, and Label Studio died at import;
the developers' venvs were older and reused as they were. Here: each supported release has a lock,
a venv is reused only while it holds exactly its lock, and no install command floats.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.stack import VERSIONS
from tests.support.locks import REPO, lock_lines, pinned


def _load_script(name: str):
    """A module of scripts/ (not a package), loaded from its file."""
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


locked_venv = _load_script("locked_venv")
lock_script = _load_script("lock")


# --- the Label Studio locks -------------------------------------------------------------------


def test_every_label_studio_release_the_suite_runs_has_a_lock_and_lock_py_makes_it():
    assert set(lock_script.LABEL_STUDIO_PINS) == set(VERSIONS)
    for version in VERSIONS:
        assert (REPO / "requirements" / f"label-studio-{version}.lock").is_file(), version


@pytest.mark.parametrize("version", VERSIONS)
def test_a_label_studio_lock_pins_the_release_and_every_package_it_needs_with_a_hash(version):
    versions = pinned((f"label-studio-{version}",))  # raises on a line that is not an exact hashed pin
    assert versions["label-studio"] == version
    assert len(versions) > 100, "the whole closure, not only label-studio"
    assert {"django", "setuptools"} <= set(versions)


@pytest.mark.parametrize("version", VERSIONS)
def test_sentry_sdk_stays_below_3_and_the_lock_says_why(version):
    lock = REPO / "requirements" / f"label-studio-{version}.lock"
    assert int(pinned((f"label-studio-{version}",))["sentry-sdk"].split(".")[0]) < 3
    header = [line for line in lock.read_text().splitlines() if line.startswith("#")]
    assert any("sentry-sdk<3" in line and "send_default_pii" in line for line in header), header
    assert "scripts/lock.py --label-studio" in header[0]


# --- scripts/locked_venv.py: when a venv counts as built from its lock ---------------------------

PINS = {"iniconfig": "2.3.1", "packaging": "26.0"}


def test_a_lock_is_read_as_exact_hashed_pins_and_anything_else_is_refused():
    lock = f"# header\n\nIniConfig==2.3.1 --hash=sha256:{'a' * 64}\npackaging==26.0 --hash=sha256:{'b' * 64}\n"
    assert locked_venv.lock_pins(lock) == PINS
    with pytest.raises(ValueError, match="not an exact, hashed pin"):
        locked_venv.lock_pins("sentry-sdk<3\n")
    with pytest.raises(ValueError, match="not an exact, hashed pin"):
        locked_venv.lock_pins("sentry-sdk==2.76.0\n")


@pytest.mark.parametrize(
    ("installed", "problem"),
    [
        ([("iniconfig", "2.3.1"), ("packaging", "26.0"), ("pip", "23.2.1"), ("setuptools", "65.5.0")], None),
        ([("iniconfig", "2.3.1")], "packaging==26.0 is missing"),
        ([("iniconfig", "2.3.1"), ("packaging", "25.0")], "packaging==25.0 where the lock has 26.0"),
        ([("iniconfig", "2.3.1"), ("packaging", "26.0"), ("sentry_sdk", "3.0.1")], "sentry-sdk==3.0.1 is not in"),
        ([("iniconfig", "2.3.1"), ("packaging", "26.0"), ("packaging", "25.0")], "packaging installed twice"),
    ],
)
def test_a_venv_matches_its_lock_only_with_exactly_its_pins(installed, problem):
    found = locked_venv.differences(PINS, installed)
    assert found == [] if problem is None else any(problem in line for line in found), found


def test_the_venv_seeds_count_once_the_lock_pins_them():
    assert locked_venv.differences({**PINS, "setuptools": "84.2.1"}, [*PINS.items(), ("setuptools", "65.5.0")]) == [
        "setuptools==65.5.0 where the lock has 84.2.1"
    ]


def test_the_backends_venv_may_hold_part_of_its_locks_but_nothing_else():
    """scripts/install.sh makes .venv again when it holds what no lock pins (strays)."""
    installed = [("iniconfig", "2.3.1"), ("sam2plus", "0.1.0"), ("pip", "25.0")]
    assert locked_venv.strays(PINS, installed, own=("sam2plus",)) == []
    assert locked_venv.strays(PINS, [*installed, ("openvino", "2026.4.0")], own=("sam2plus",)) == [
        "openvino==2026.4.0 is not in the lock"
    ]
    assert locked_venv.strays(PINS, [("packaging", "25.0")]) == ["packaging==25.0 where the lock has 26.0"]


def test_this_venv_holds_nothing_its_locks_do_not_pin():
    locks = [f"requirements/{part}.lock" for part in ("torch", "sam2", "runtime", "test")]
    command = [
        sys.executable,
        REPO / "scripts/locked_venv.py",
        "strays",
        "--venv",
        Path(sys.prefix),
        "--own",
        "sam2plus",
    ]
    found = subprocess.run(
        [*command, *(arg for lock in locks for arg in ("--lock", REPO / lock))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert found.returncode == 0, found.stderr


def _tiny_lock(path: Path, *names: str) -> Path:
    """A lock of a few small packages, their lines taken from the test lock (real files, real hashes)."""
    lines = [line for line in lock_lines("test") if line.split("==")[0] in names]
    assert len(lines) == len(names), lines
    path.write_text("# a test's lock\n" + "\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_a_venv_is_built_from_its_lock_reused_while_it_matches_and_rebuilt_when_not(tmp_path):
    """Real venvs and real pip: built, reused, rebuilt after its lock changed, rebuilt after a
    package was added by hand; never used while it differs."""
    lock, venv = _tiny_lock(tmp_path / "a.lock", "iniconfig"), tmp_path / "venv"
    python = sys.executable  # the interpreter a new venv gets; any CPython 3.11 here
    assert locked_venv.ensure(lock, venv, python) is True
    assert locked_venv.problems(lock, venv) == []
    assert (venv / locked_venv.MARKER).read_text().strip() == locked_venv.lock_digest(lock)
    assert locked_venv.ensure(lock, venv, python) is False, "a matching venv is reused"

    _tiny_lock(lock, "iniconfig", "pluggy")
    assert any("another lock" in p for p in locked_venv.problems(lock, venv))
    assert locked_venv.ensure(lock, venv, python) is True
    assert {"iniconfig", "pluggy"} <= {locked_venv.canonical(n) for n, _ in locked_venv.installed_packages(venv)}

    extra = _tiny_lock(tmp_path / "extra.lock", "colorama")
    install = [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--no-deps", "--require-hashes", "-r"]
    subprocess.run([*install, str(extra)], check=True, timeout=300)
    assert any("colorama" in p and "not in the lock" in p for p in locked_venv.problems(lock, venv))
    check = subprocess.run(
        [sys.executable, REPO / "scripts/locked_venv.py", "check", "--lock", lock, "--venv", venv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 1 and "colorama" in check.stderr, check.stderr
    assert locked_venv.ensure(lock, venv, python) is True
    assert "colorama" not in {locked_venv.canonical(n) for n, _ in locked_venv.installed_packages(venv)}
    described = locked_venv.describe(lock, venv)
    assert locked_venv.lock_digest(lock) in described and "matches the lock" in described
    assert "pip check: No broken requirements found." in described


# --- no install floats --------------------------------------------------------------------------

SHELL_LIKE = ("scripts/*.sh", ".ci/run", "Dockerfile", "haproxy/Dockerfile", "*.yml", "envs/*.yml")
DOCS = ("README.md", "docs/*.md")
PIP_INSTALL = re.compile(r"\bpip3?\b[^|;&`]*?\binstall\b")


def floating_install(command: str) -> bool:
    """Whether a `pip install` command (from `pip` to the end of its line) can take versions that no
    lock chose."""
    command = re.split(r"&&|\|\||[;|`]", command)[0]
    if "--require-hashes" in command or "--dry-run" in command:
        return False
    if "--no-index" in command:  # only the wheels scripts/gpu-wheels.sh made from the lock
        return False
    if "TORCH_INDEX_URL" in command and "requirements/torch.lock" in command:  # the lock's versions elsewhere
        return False
    targets = [word for word in command.split("install", 1)[1].split() if not word.startswith("-")]
    return targets != ["."]  # the project itself, its dependencies left to the lock (--no-deps)


def shell_commands(path: Path) -> list[tuple[int, str]]:
    """The lines of a shell-like file with their continuation lines joined; comments left out."""
    commands, pending, start = [], "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not pending:
            start = number
            if line.lstrip().startswith("#") and path.suffix != ".md":
                continue
        pending += line.rstrip("\\") + " "
        if not line.endswith("\\"):
            commands.append((start, pending))
            pending = ""
    return commands


def floating_python_installs(path: Path) -> list[int]:
    """The lines of list literals in Python code that run `pip install` without the lock's hashes
    (a literal and the literals inside it are read as one command)."""
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.List, ast.Tuple)):
            words = {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
            if {"pip", "install"} <= words and not {"--require-hashes", "--dry-run"} & words:
                found.append(node.lineno)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def every_install() -> list[str]:
    """file:line of every `pip install` the project runs or tells people to run that floats."""
    floating = []
    for pattern in (*SHELL_LIKE, *DOCS):
        for path in sorted(REPO.glob(pattern)):
            for number, command in shell_commands(path):
                for match in PIP_INSTALL.finditer(command):
                    if floating_install(command[match.start() :]):
                        floating.append(f"{path.relative_to(REPO)}:{number}: {command.strip()}")
    for path in sorted([*REPO.glob("scripts/*.py"), *REPO.glob("tests/**/*.py"), *REPO.glob("sam2plus/*.py")]):
        floating += [f"{path.relative_to(REPO)}:{line}" for line in floating_python_installs(path)]
    return floating


def test_no_script_dockerfile_compose_file_or_doc_installs_a_python_package_outside_a_lock():
    assert every_install() == []


@pytest.mark.parametrize(
    "command",
    [
        'pip install --quiet "label-studio==1.23.2"',
        "python -m pip install --upgrade pip",
        "pip install moto",
    ],
)
def test_the_check_catches_a_floating_install(command):
    assert floating_install(command)


@pytest.mark.parametrize(
    "command",
    [
        "pip install --no-deps --require-hashes -r requirements/runtime.lock",
        "pip install --no-deps --no-build-isolation . && pip check",
        ".venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .",
    ],
)
def test_the_check_lets_locked_and_project_installs_pass(command):
    assert not floating_install(command)


def test_the_check_reads_python_install_commands(tmp_path):
    code = tmp_path / "x.py"
    code.write_text('import subprocess\nsubprocess.run(["python", "-m", "pip", "install", "sentry-sdk<3"])\n')
    assert floating_python_installs(code) == [2]
    code.write_text('run(["python", "-m", "pip", "install", "--require-hashes", "-r", "a.lock"])\n')
    assert floating_python_installs(code) == []


# --- what ships runs where it ships ---------------------------------------------------------------

SHIPPED = ("sam2plus/*.py", "probe/*.py", "model.py", "_wsgi.py", "gunicorn.conf.py")


CHECKOUT_ONLY = ("tests", "benchmarks", "scripts")


def checkout_imports(path: Path, root: Path = REPO) -> list[str]:
    """The imports of `path` (at any depth: function-level too) from the checkout-only trees."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [f"{path.relative_to(root)}: {name}" for name in names if name.split(".")[0] in CHECKOUT_ONLY]
    return found


def test_the_shipped_package_imports_nothing_the_image_does_not_contain():
    """The image copies sam2plus/, probe/ and the top-level modules only (Dockerfile); a module that
    reaches into tests/support fails there (python -m sam2plus.bench_replicas did)."""
    shipped = sorted(path for pattern in SHIPPED for path in REPO.glob(pattern))
    assert len(shipped) > 30
    assert [line for path in shipped for line in checkout_imports(path)] == []


def test_the_import_check_sees_a_function_level_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import json\n\n\ndef main():\n    from tests.support.scenes import DiscScene\n    import benchmarks\n"
    )
    assert checkout_imports(module, tmp_path) == ["m.py: tests.support.scenes", "m.py: benchmarks"]
