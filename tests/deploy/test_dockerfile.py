"""The Dockerfile, parsed by Docker's own parser (package `dockerfile`), and .dockerignore.

Fast checks of the file; tests/deploy/test_image.py builds and runs it with podman (slow). Here
the start command and the health check are run as the image would run them, against a
stand-in `_wsgi:app`.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from http.client import HTTPConnection
from pathlib import Path

import dockerfile
import pytest

from tests.support.locks import RUNTIME_PARTS
from tests.support.servers import stop

REPO = Path(__file__).resolve().parents[2]
INSTRUCTIONS = dockerfile.parse_file(str(REPO / "Dockerfile"))


def values(cmd: str) -> list[tuple]:
    return [i.value for i in INSTRUCTIONS if i.cmd == cmd]


def instruction(cmd: str):
    """The one instruction cmd (CMD, HEALTHCHECK) of the Dockerfile."""
    (found,) = [i for i in INSTRUCTIONS if i.cmd == cmd]
    return found


def run_lines() -> list[str]:
    return [" ".join(v) for v in values("RUN")]


def env() -> dict:
    pairs = [pair for v in values("ENV") for pair in zip(v[::2], v[1::2], strict=True)]
    return dict(pairs)


def test_base_is_debian_bookworm_slim_with_python_from_debian_in_a_venv():
    """The release of the machines the image tests build on (mmdebstrap makes the same base)."""
    assert values("FROM") == [("debian:bookworm-slim",)]
    (apt,) = [line for line in run_lines() if "apt-get install" in line]
    assert re.search(r"\bpython3\b", apt) and "python3-venv" in apt and "python3 -m venv /opt/venv" in apt
    assert env()["PATH"].startswith("/opt/venv/bin:")


def test_no_cuda_toolkit_or_compiler_is_installed():
    for line in run_lines():
        assert not re.search(r"cuda-?toolkit|cuda-nvcc|\bnvcc\b|-devel\b|build-essential|\bg(cc|\+\+)\b", line), line


def lock_installs() -> list[tuple[int, str]]:
    """(index among the RUN lines, lock file) for every RUN that installs a requirements/*.lock."""
    found = []
    for i, line in enumerate(run_lines()):
        found += [(i, lock) for lock in re.findall(r"-r (requirements/\w+\.lock)", line)]
    return found


def test_the_runtime_lock_is_installed_torch_first_then_sam2_then_the_rest_all_hashed():
    assert [lock for _, lock in lock_installs()] == [f"requirements/{p}.lock" for p in RUNTIME_PARTS]
    lines = run_lines()
    for i, lock in lock_installs():
        assert "--no-deps --require-hashes" in lines[i], lock
    assert {v[0] for v in values("COPY") if v[0].startswith("requirements/")} == {
        f"requirements/{p}.lock" for p in RUNTIME_PARTS
    }


def test_torch_index_url_swaps_only_torch_and_its_cuda_packages():
    assert [v[0] for v in values("ARG") if v[0].startswith("TORCH_INDEX_URL=")] == ['TORCH_INDEX_URL=""']
    (torch,) = [line for line in run_lines() if "TORCH_INDEX_URL" in line]
    assert '--index-url "$TORCH_INDEX_URL"' in torch and "-r requirements/torch.lock" in torch


def test_sam2_is_installed_without_building_its_cuda_extension_then_the_project():
    lines = run_lines()
    (sam2,) = [i for i, line in enumerate(lines) if "requirements/sam2.lock" in line]
    assert "SAM2_BUILD_CUDA=0" in lines[sam2] and "--no-build-isolation" in lines[sam2]
    (project,) = [
        i for i, line in enumerate(lines) if re.search(r"pip install --no-deps --no-build-isolation \.(\s|$)", line)
    ]
    assert sam2 < project
    assert "pip check" in lines[project]


def test_the_app_runs_as_a_non_root_user_created_in_the_image():
    users = values("USER")
    assert users, "no USER instruction"
    uid = users[-1][0].split(":")[0]
    assert uid not in ("root", "0")
    assert any(f"useradd --uid {uid} " in line for line in run_lines())
    order = [i.cmd for i in INSTRUCTIONS]
    assert len(order) - 1 - order[::-1].index("USER") < order.index("CMD")


def test_container_defaults_match_the_backend_contract():
    contract = {
        "DEVICE": "cuda",
        "MODEL_CONFIG": "configs/sam2.1/sam2.1_hiera_l.yaml",
        "MODEL_CHECKPOINT": "sam2.1_hiera_large.pt",
        "CHECKPOINT_DIR": "/sam2/checkpoints",
        "CACHE_DIR": "/cache",
        "MODEL_DIR": "/data/models",
        "WORKERS": "1",
        "THREADS": "8",
        "PORT": "9090",
    }
    assert contract.items() <= env().items()
    assert values("EXPOSE") == [("9090",)]


def test_start_command_is_plain_gunicorn_reading_its_settings_from_gunicorn_conf_py():
    """gunicorn.conf.py (copied beside _wsgi.py) takes HOST, PORT, WORKERS and THREADS from the
    environment, so the command names nothing but the app, as a user's shell would."""
    cmd = instruction("CMD")
    assert cmd.json and cmd.value == ("gunicorn", "_wsgi:app")
    (workdir,) = values("WORKDIR")
    assert [v for v in values("COPY") if "gunicorn.conf.py" in v[:-1]][0][-1] in ("./", workdir[0] + "/")
    assert env()["HOST"] == "0.0.0.0", "the container listens on every interface; compose publishes the port"


def test_healthcheck_asks_health_on_the_container_port():
    check = instruction("HEALTHCHECK")
    assert check.json and check.value[0] == "CMD"
    assert "/health" in " ".join(check.value) and "PORT" in " ".join(check.value)


def test_checkpoints_are_baked_in_only_when_the_build_argument_names_them():
    assert [v[0] for v in values("ARG") if v[0].startswith("BAKE_CHECKPOINTS=")] == ['BAKE_CHECKPOINTS=""']
    (bake,) = [line for line in run_lines() if "BAKE_CHECKPOINTS" in line]
    assert 'if [ -n "$BAKE_CHECKPOINTS" ]' in bake
    assert "python scripts/download-checkpoints.py /sam2/checkpoints $BAKE_CHECKPOINTS" in bake


def copy_sources() -> set[str]:
    return {source.rstrip("/") for v in values("COPY") for source in v[:-1]}


def test_every_copied_path_exists():
    missing = sorted(s for s in copy_sources() if not (REPO / s).exists())
    assert not missing


def test_dockerignore_sends_exactly_what_the_dockerfile_copies():
    patterns = [p for p in (REPO / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    assert patterns[0] == "*"  # everything is left out unless named below
    sent = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert sent == copy_sources()
    forbidden = ("envs", "vols", "examples", "tests", ".venv", ".git", ".wheels")
    assert not [p for p in sent if p.endswith(".env") or p.split("/")[0] in forbidden]


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STAND_IN_APP = '''
import json, os

def app(environ, start_response):
    """/health: 200, or 503 while a file `unhealthy` exists; /info: whether threads serve."""
    if environ["PATH_INFO"] == "/health":
        status = "503 Service Unavailable" if os.path.exists("unhealthy") else "200 OK"
        start_response(status, [("Content-Type", "application/json")])
        return [b"{}"]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"multithread": environ["wsgi.multithread"]}).encode()]
'''


def healthcheck(environment: dict) -> int:
    """Exit status of the HEALTHCHECK command run with environment."""
    argv = list(instruction("HEALTHCHECK").value[1:])  # after "CMD"
    return subprocess.run(argv, env=environment, capture_output=True, timeout=30).returncode


def test_start_command_serves_the_app_and_the_healthcheck_follows_it(tmp_path, free_port):
    """The image's /app: the stand-in app beside the real gunicorn.conf.py, the Dockerfile's ENV
    with this machine's paths and an untrained model (what the start-up check looks at)."""
    (tmp_path / "_wsgi.py").write_text(STAND_IN_APP)
    shutil.copy(REPO / "gunicorn.conf.py", tmp_path)
    bindir = str(Path(sys.executable).parent)
    environment = {
        **env(),
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "PORT": str(free_port),
        "WORKERS": "2",
        "THREADS": "3",
        "DEVICE": "cpu",
        "MODEL_CHECKPOINT": "untrained",
        "CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_DIR": str(tmp_path / "data" / "models"),
    }
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            list(instruction("CMD").value),
            cwd=tmp_path,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while healthcheck(environment) != 0:
            assert server.poll() is None, "gunicorn exited"
            assert time.monotonic() < deadline, "never healthy"
            time.sleep(0.2)
        # gunicorn serves once its first worker is up; the second may still be on its way.
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children")
        while len(children.read_text().split()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(children.read_text().split()) == 2  # WORKERS
        connection = HTTPConnection("127.0.0.1", free_port, timeout=5)
        connection.request("GET", "/info")
        assert json.loads(connection.getresponse().read()) == {"multithread": True}  # THREADS > 1
        connection.close()
        assert f"Listening at: http://0.0.0.0:{free_port}" in log.read_text(), "HOST=0.0.0.0 from the ENV"
        (tmp_path / "unhealthy").touch()
        assert healthcheck(environment) != 0
    finally:
        stop(server)  # SIGTERM to gunicorn and its workers, SIGKILL if they linger
    (tmp_path / "unhealthy").unlink()
    assert healthcheck(environment) != 0  # nothing listens any more
