"""The image built and run with podman, as root, the way tests/deploy/test_image.py needs it.

podman here needs runc and cgroupfs (this kind of machine's hybrid cgroups), host networking
(no bridge can reach a server on loopback) and, at build time, this machine's pip configuration
and local indexes mounted in, so the build resolves exactly what the host resolves
(docs/tests.md: The image). scripts/install-containers.sh installs podman and imports the base.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import subprocess
import time
from pathlib import Path

import yaml

PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs")
BACKEND_COMPOSE = Path(__file__).resolve().parents[2] / "backend.compose.yml"
BASE = "docker.io/library/debian:bookworm-slim"
IMAGE = "localhost/sam2plus-test:latest"
FRONT_IMAGE = "localhost/sam2plus-front-test:latest"
LABEL = "org.sam2plus.test-build"  # on every image these helpers build, so that pruning keeps to ours
PIP_CONFIG = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pip.conf",
    "/etc/xdg/pip",
    "/root/.config/pip/pip.conf",
    "/opt/pypi",
    "/opt/pypi-more",
    "/opt/wheels",
)


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Run one podman command; its output as text."""
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=check)


def image_id(name: str) -> str | None:
    """The id of the image `name`, or None when podman has none."""
    found = podman("image", "inspect", "--format", "{{.Id}}", name, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


@dataclasses.dataclass(frozen=True)
class Build:
    """A finished build: the image's id, its size and how long the build took."""

    image_id: str
    size_bytes: int
    seconds: float


def build(context: Path, tag: str = IMAGE, timeout: float = 1800) -> Build:
    """`podman build` of context's Dockerfile as it is: never pulls, keeps HEALTHCHECK (docker
    format), host network and pip configuration for pip inside. The previous image of the tag is
    removed when the build replaced it, so the disk does not fill up by an image per run."""
    previous = image_id(tag)
    mounts = [arg for path in PIP_CONFIG if Path(path).exists() for arg in ("-v", f"{path}:{path}:ro")]
    started = time.monotonic()
    done = subprocess.run(
        [
            *PODMAN,
            "build",
            "--pull=never",
            "--format",
            "docker",
            "--network",
            "host",
            *mounts,
            "--label",
            f"{LABEL}=1",
            "-t",
            tag,
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    seconds = time.monotonic() - started
    if done.returncode:
        raise RuntimeError(f"podman build failed ({done.returncode}):\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}")
    built = image_id(tag)
    if previous and previous != built:
        podman("rmi", "--force", previous, check=False)
    # Layers of our replaced builds that nothing uses; other dangling images on the machine are not ours.
    podman("image", "prune", "--force", "--filter", f"label={LABEL}", check=False)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
    return Build(built, size, seconds)


def _default(value) -> str:
    """A Compose value with its `${NAME:-default}` replaced by the default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def hardening(service: str = "sam2plus") -> list[str]:
    """`podman run` options for the limits a service of backend.compose.yml sets itself (its defaults):
    capabilities, no-new-privileges, read-only root and its tmpfs, pids and memory limits."""
    spec = yaml.safe_load(BACKEND_COMPOSE.read_text())["services"][service]
    args = [arg for cap in spec["cap_drop"] for arg in ("--cap-drop", cap)]
    args += [arg for option in spec["security_opt"] for arg in ("--security-opt", option.replace(":true", ""))]
    args += ["--read-only"] if spec.get("read_only") else []
    args += [arg for tmpfs in spec.get("tmpfs", []) for arg in ("--tmpfs", tmpfs)]
    args += ["--pids-limit", _default(spec["pids_limit"]), "--memory", _default(spec["mem_limit"])]
    return args


@contextlib.contextmanager
def container(name: str, image: str, env: dict[str, str], volumes: dict[str, str], stop_timeout: int = 130):
    """Start a container of image (host network, the given environment and `host:container[:ro]`
    volumes) with the limits backend.compose.yml sets (`hardening`), yield its name, and remove it
    however the block ends."""
    podman("rm", "--force", "--ignore", name)
    args = ["run", "--detach", "--name", name, "--network", "host", "--stop-timeout", str(stop_timeout)]
    args += hardening()
    args += [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
    args += [arg for host, inside in volumes.items() for arg in ("--volume", f"{host}:{inside}")]
    try:
        podman(*args, image)
        yield name
    finally:
        podman("rm", "--force", "--ignore", "--time", "0", name, check=False)


def logs(name: str) -> str:
    """The container's output so far (stdout and stderr)."""
    done = podman("logs", name, check=False)
    return done.stdout + done.stderr


def state(name: str) -> dict[str, str]:
    """The container's status, exit code and user, from `podman inspect`."""
    template = "{{.State.Status}} {{.State.ExitCode}} {{.Config.User}}"
    status, exit_code, *user = podman("inspect", "--format", template, name).stdout.split()
    return {"status": status, "exit_code": exit_code, "user": user[0] if user else ""}
