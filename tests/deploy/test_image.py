"""The Dockerfile as it is, built with podman and run CPU-only with untrained weights (slow).

The base `debian:bookworm-slim` is made from the Debian mirror by scripts/install-containers.sh
(no registry is reachable here); the build never pulls. Containers use the host network so that
they reach the image server on loopback, and listen on 127.0.0.1 only. Untrained weights give
meaningless masks: these tests check what the image is and does, never mask quality.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.support import podman as pm
from tests.support.docs import section
from tests.support.locks import REPO, RUNTIME_PARTS, freeze_versions, pinned
from tests.support.regions import require_some
from tests.support.scenes import DiscScene, brush_mask, label_config, point_context, rect_context
from tests.support.servers import TEST_MODEL, free_port, gunicorn_server, static_server

pytestmark = pytest.mark.slow

SCENE = DiscScene(1600, 1200, 800, 600, 150)
TIMED = DiscScene(1600, 1200, 500, 400, 120)  # clicked first by the timing test, so its first click encodes
PROMPTS = [
    rect_context(SCENE.box(), SCENE.width, SCENE.height),
    point_context([(800, 600), (830, 640), (100, 100)], SCENE.width, SCENE.height, positive=[True, True, False]),
]
UID = 1000


@pytest.fixture(scope="module")
def image():
    """The image, built now from the repository (cached layers reused); its build time and size printed."""
    if not pm.image_id(pm.BASE):
        pytest.fail(f"podman has no {pm.BASE}: run `bash scripts/install-containers.sh` (scripts/test.sh does)")
    first = pm.build(REPO)
    again = pm.build(REPO)  # nothing changed: every layer from the cache
    assert again.image_id == first.image_id
    print(
        f"\nimage {pm.IMAGE}: {first.size_bytes / 2**30:.2f} GiB; build {first.seconds:.0f} s"
        f" (cold unless podman had its layers), rebuild {again.seconds:.1f} s (cached)"
    )
    return pm.IMAGE


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Host folders for the container's /cache (task images in /cache/tasks) and /data, owned by uid 1000."""
    root = tmp_path_factory.mktemp("image")
    made = {name: root / name for name in ("cache", "data", "tasks", "served")}
    for folder in made.values():
        folder.mkdir()
        os.chown(folder, UID, UID)
    SCENE.write(made["tasks"] / "scene.jpg")
    SCENE.write(made["served"] / "scene.jpg")
    TIMED.write(made["served"] / "timed.jpg")
    return made


@contextlib.contextmanager
def backend(image: str, folders: dict[str, Path], image_host: str, name: str):
    """A container of image serving on a free loopback port; yields (name, url) once /health answers."""
    port = free_port()
    env = {**TEST_MODEL, "HOST": "127.0.0.1", "PORT": str(port), "IMAGE_HOSTS": image_host, "THREADS": "4"}
    volumes = {
        str(folders["cache"]): "/cache",
        str(folders["tasks"]): "/cache/tasks:ro",
        str(folders["data"]): "/data",
    }
    with pm.container(name, image, env, volumes) as running:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while not healthy(url):
            current = pm.state(running)
            assert current["status"] == "running", f"container {current}:\n{pm.logs(running)[-4000:]}"
            assert time.monotonic() < deadline, f"no /health within 240 s:\n{pm.logs(running)[-4000:]}"
            time.sleep(0.5)
        yield running, url


def healthy(url: str) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(f"{url}/health", timeout=2).status_code == 200
    return False


@pytest.fixture(scope="module")
def served(image, folders):
    """One container for the module; the last test stops it."""
    with static_server(folders["served"]) as host:
        with backend(image, folders, host, f"sam2plus-test-{os.getpid()}") as (name, url):
            yield name, url, host


def predict(url: str, image_value: str, project: str, fmt: str, context: dict, timeout: float = 300) -> list[dict]:
    body = {
        "tasks": [{"id": 1, "data": {"image": image_value}}],
        "project": project,
        "label_config": label_config(fmt),
        "params": {"login": None, "password": None, "context": context},
    }
    answer = requests.post(f"{url}/predict", json=body, timeout=timeout)
    assert answer.status_code == 200, answer.text
    return answer.json()["results"][0]["result"]


def setup(url: str, project: str, fmt: str) -> None:
    body = {"project": project, "schema": label_config(fmt), "extra_params": {"return_format": {"type": fmt}}}
    answer = requests.post(f"{url}/setup", json=body, timeout=10)
    assert answer.status_code == 200, answer.text


def test_pip_freeze_in_the_image_equals_the_runtime_lock(image):
    freeze = pm.podman("run", "--rm", "--network", "none", "--entrypoint", "pip", image, "freeze", "--all").stdout
    assert freeze_versions(freeze) == pinned(RUNTIME_PARTS)


def test_the_readme_states_the_cuda_version_of_the_images_torch(image):
    probe = "import torch; print(torch.__version__, torch.version.cuda)"
    version, cuda = pm.podman(
        "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", probe
    ).stdout.split()
    stated = section("### The image", page="deployment.md").text
    assert f"`{version}`, built for **CUDA {cuda}**" in stated


def test_the_server_runs_as_uid_1000_with_gunicorn_as_pid_1(served):
    name, *_ = served
    assert pm.state(name)["user"] == f"{UID}:{UID}"
    status = pm.podman("exec", name, "cat", "/proc/1/status").stdout
    assert f"Uid:\t{UID}\t{UID}\t{UID}\t{UID}" in status
    command = pm.podman("exec", name, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert command[1].endswith("gunicorn") and "_wsgi:app" in command, "gunicorn itself gets SIGTERM"


def test_the_container_runs_with_the_limits_backend_compose_sets(served):
    """Issue 25: no capabilities, no privilege gain, a read-only root (only /tmp, a tmpfs, and the
    volumes are written), and the pids and memory limits, as the kernel holds them (cgroup v1 here)."""
    name, *_ = served
    status = pm.podman("exec", name, "cat", "/proc/1/status").stdout
    assert "CapEff:\t0000000000000000" in status and "CapBnd:\t0000000000000000" in status
    assert "NoNewPrivs:\t1" in status
    denied = pm.podman("exec", name, "touch", "/app/written", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    assert pm.podman("exec", name, "touch", "/tmp/written", "/cache/written").returncode == 0
    limits = pm.podman(
        "exec", name, "cat", "/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    )
    assert limits.stdout.split() == ["1024", str(8 << 30)]


def test_the_healthcheck_says_healthy(served):
    name, *_ = served
    check = pm.podman("healthcheck", "run", name, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "unhealthy" not in check.stdout


@pytest.mark.parametrize("source", ["mounted folder", "image host"])
def test_setup_then_predict_return_regions_of_the_image_size(served, source):
    _, url, host = served
    value = "/cache/tasks/scene.jpg" if source == "mounted folder" else f"http://{host}/scene.jpg"
    project = "21.1795599678" if source == "mounted folder" else "22.1795599678"
    setup(url, project, "BrushLabels")
    per_prompt = [predict(url, value, project, "BrushLabels", context) for context in PROMPTS]
    for regions in per_prompt:
        assert len(regions) <= 1, "one brush region carries every blob"
        for region in regions:
            assert (region["original_width"], region["original_height"]) == (SCENE.width, SCENE.height)
            assert brush_mask(region).shape == (SCENE.height, SCENE.width)
    require_some(per_prompt, source)


def timed_clicks(url: str, value: str) -> tuple[float, float]:
    """Seconds of a first click on TIMED (download, decode, encoder, decoder) and of the same click again."""
    context = rect_context(TIMED.box(), TIMED.width, TIMED.height)
    seconds = []
    for _ in range(2):
        started = time.monotonic()
        predict(url, value, "23.1795599678", "BrushLabels", context)
        seconds.append(time.monotonic() - started)
    return seconds[0], seconds[1]


def test_clicks_through_the_container_and_from_the_venv(served, tmp_path, folders):
    _, url, host = served
    value = f"http://{host}/timed.jpg"
    container_first, container_again = timed_clicks(url, value)
    env = {"CACHE_DIR": str(tmp_path / "cache"), "MODEL_DIR": str(tmp_path / "models"), "IMAGE_HOSTS": host}
    with gunicorn_server(env, workers=1, threads=4, log_dir=tmp_path) as venv:
        venv_first, venv_again = timed_clicks(venv.url, value)
    print(
        f"\nclick on {TIMED.width}x{TIMED.height}, hiera-t untrained, CPU: container first {container_first:.2f} s,"
        f" repeated {container_again:.2f} s; venv first {venv_first:.2f} s, repeated {venv_again:.2f} s"
    )
    assert container_again < container_first and venv_again < venv_first, "a repeated click reuses the embedding"


def test_settings_survive_in_a_new_container_on_the_same_volume(served, image, folders):
    _, url, host = served
    project = "24.1795599678"
    setup(url, project, "Rectangle")
    with backend(image, folders, host, f"sam2plus-test-{os.getpid()}-second") as (_, second):
        per_prompt = [predict(second, "/cache/tasks/scene.jpg", project, "Rectangle", c) for c in PROMPTS]
        assert all(r["type"] == "rectangle" for regions in per_prompt for r in regions)
        require_some(per_prompt)
        body = {
            "tasks": [{"data": {"image": "/cache/tasks/scene.jpg"}}],
            "project": project,
            "label_config": label_config("BrushLabels"),
            "params": {"context": PROMPTS[0]},
        }
        refused = requests.post(f"{second}/predict", json=body, timeout=120)
        assert refused.status_code == 400 and "<Rectangle>" in refused.json()["error"], "the stored format decides"


def test_podman_stop_during_a_click_answers_it_and_exits_0(served, folders):
    """Last in the module: it stops the module's container."""
    name, url, host = served
    fresh = DiscScene(1800, 1300, 900, 650, 150).write(folders["served"] / "fresh.jpg")
    answered_at = []

    def click():
        predict(url, f"http://{host}/{fresh.name}", "25.1795599678", "BrushLabels", PROMPTS[0])
        answered_at.append(time.monotonic())

    clicking = threading.Thread(target=click)
    clicking.start()
    time.sleep(0.5)  # the click is in the worker (its download, decode and encoder run take seconds on CPU)
    stop_sent = time.monotonic()
    stopped = pm.podman("stop", "--time", "130", name, timeout=180)
    clicking.join(60)
    assert stopped.returncode == 0
    assert len(answered_at) == 1, "the click in flight was answered"
    assert answered_at[0] > stop_sent, "the click was still in flight when SIGTERM came"
    print(f"\nstop: the click in flight answered {answered_at[0] - stop_sent:.1f} s after SIGTERM")
    final = pm.state(name)
    assert (final["status"], final["exit_code"]) == ("exited", "0")
    output = pm.logs(name)
    assert "Traceback" not in output, output[-4000:]
    assert "Handling signal: term" in output or "Shutting down" in output, output[-2000:]
