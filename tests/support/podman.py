"""The image built and run with podman, as root, the way tests/deploy/test_image.py needs it.

podman here needs runc and cgroupfs (this kind of machine's hybrid cgroups), host networking
(no bridge can reach a server on loopback) and, at build time, this machine's pip configuration
and local indexes mounted in, so the build resolves exactly what the host resolves
(docs/tests.md: The image). scripts/install-containers.sh installs podman and imports the base.
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import time
from pathlib import Path

PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs")
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


@contextlib.contextmanager
def container(name: str, image: str, env: dict[str, str], volumes: dict[str, str], stop_timeout: int = 130):
    """Start a container of image (host network, the given environment and `host:container[:ro]`
    volumes), yield its name, and remove it however the block ends."""
    podman("rm", "--force", "--ignore", name)
    args = ["run", "--detach", "--name", name, "--network", "host", "--stop-timeout", str(stop_timeout)]
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
