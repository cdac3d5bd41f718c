"""requirements/*.lock read back: the pins scripts/lock.py wrote."""

import re
from pathlib import Path

from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCKS = REPO / "requirements"
RUNTIME_PARTS = ("torch", "sam2", "runtime")  # what the image installs, in this order
PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+) --hash=sha256:[0-9a-f]{64}")


def lock_lines(part: str) -> list[str]:
    """The requirement lines of requirements/<part>.lock (comments and blank lines left out)."""
    text = (LOCKS / f"{part}.lock").read_text()
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def pinned(parts: tuple[str, ...]) -> dict[str, str]:
    """Canonical name -> version over the lock files parts (a line that is not a hashed pin raises)."""
    versions = {}
    for part in parts:
        for line in lock_lines(part):
            match = PIN.fullmatch(line)
            if not match:
                raise ValueError(f"requirements/{part}.lock: not an exact, hashed pin: {line!r}")
            name = canonicalize_name(match["name"])
            if name in versions:
                raise ValueError(f"requirements/{part}.lock: {name} is pinned twice")
            versions[name] = match["version"]
    return versions


def freeze_versions(freeze: str) -> dict[str, str]:
    """Canonical name -> version from `pip freeze --all` output, pip itself and the project left out."""
    versions = {}
    for line in freeze.splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            versions[canonicalize_name(name)] = version.strip()
    versions.pop("pip", None)
    versions.pop("sam2plus", None)
    return versions
