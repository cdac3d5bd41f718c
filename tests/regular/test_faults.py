"""Faults (docs/operations.md: Faults): a worker killed in the middle
of a request, a full cache disk, a settings store locked under concurrent /setup from several
workers, and image hosts or Label Studio that hang or drip. Under gunicorn with the real SAM2 (hiera-t,
untrained, CPU) unless only the HTTP layer is at stake (then the geometry test double's app).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from sam2plus import settings
from tests.support.faults import connections_by_worker, dripping_server, gated_server
from tests.support.inprocess import PROJECT, SCENE, make_backend, predict_body
from tests.support.regions import require_some
from tests.support.scenes import DiscScene, label_config, point_context, rect_context
from tests.support.servers import gunicorn_server, static_server

GEOMETRY_APP = "tests.support.geometry_app:app"
OTHER = DiscScene(1600, 1200, 400, 300, 150)


def _click(url: str, image: str, fmt: str = "BrushLabels", timeout: float = 180, context=None):
    body = {
        "tasks": [{"id": 1, "data": {"image": image}}],
        "project": PROJECT,
        "label_config": label_config(fmt),
        "params": {"context": context or rect_context(SCENE.box(), SCENE.width, SCENE.height)},
    }
    return requests.post(f"{url}/predict", json=body, timeout=timeout)


def _regions(answer) -> list:
    assert answer.status_code == 200, answer.text
    return [{k: v for k, v in r.items() if k != "id"} for r in answer.json()["results"][0]["result"]]


# --- a worker killed in the middle of a request ------------------------------------------------------


# Threads, and connections, per worker. Clicks go out until both workers hold one, but which worker
# accepts is the kernel's choice, and not a fair coin: one idle worker took all 16 clicks in a run.
# A worker holding THREADS connections stops accepting (gunicorn's worker_connections), so the
# next click goes to the other.
THREADS = 4
SERVING = {"GUNICORN_CMD_ARGS": f"--worker-connections {THREADS} --keep-alive 0"}


@pytest.mark.slow
def test_a_worker_killed_mid_request_is_replaced_and_nothing_else_is_affected(tmp_path):
    """SIGKILL (what the OOM killer sends) to a worker whose clicks are stuck halfway through their
    downloads: its clients lose their connections; gunicorn starts a new worker; the other worker's
    clicks finish with the right answers; the project keeps its settings; the partial download the
    dead worker left is never read, and a later click on the same URL gets the same answer."""
    images = tmp_path / "images"
    images.mkdir()
    SCENE.write(images / "scene.jpg")
    with gated_server(images) as gate:
        env = {"CACHE_DIR": str(tmp_path / "cache"), "MODEL_DIR": str(tmp_path / "models"), "IMAGE_HOSTS": gate.host}
        with gunicorn_server(env | SERVING, workers=2, threads=THREADS, log_dir=tmp_path) as server:
            setup = {
                "project": PROJECT,
                "schema": label_config("PolygonLabels"),
                "extra_params": {"return_format": {"type": "PolygonLabels"}},
            }
            assert requests.post(f"{server.url}/setup", json=setup, timeout=10).status_code == 200
            expected = _regions(_click(server.url, f"http://{gate.host}/scene.jpg", "PolygonLabels"))
            port = int(server.url.rsplit(":", 1)[1])

            outcomes: list = []

            def gated_click():
                try:
                    outcomes.append(_click(server.url, f"http://{gate.host}/gated/scene.jpg", "PolygonLabels"))
                except requests.ConnectionError as exc:
                    outcomes.append(exc)

            clients = []
            deadline = time.monotonic() + 60
            held = {}
            while (len(clients) < 2 or min(held.values(), default=0) == 0) and len(clients) <= THREADS:
                clients.append(threading.Thread(target=gated_click))
                clients[-1].start()
                assert gate.waiting.acquire(timeout=30), "the download started"
                held = connections_by_worker(server.workers(), port)
            assert min(held.values()) >= 1 and len(held) == 2, f"both workers hold a stuck click: {held}"
            # the host has sent the first halves; each worker writes its partial file a moment later
            parts, written_by = [], time.monotonic() + 30
            while len(parts) < len(clients) and time.monotonic() < written_by:
                time.sleep(0.1)
                parts = list((tmp_path / "cache" / "downloads").glob(".part-*"))
            assert len(parts) == len(clients), "each stuck download has written half a file"

            victim = max(held, key=held.get)
            os.kill(victim, signal.SIGKILL)
            time.sleep(1)
            gate.gate.set()
            for client in clients:
                client.join(180)
            failed = [o for o in outcomes if isinstance(o, Exception)]
            answered = [o for o in outcomes if not isinstance(o, Exception)]
            assert len(failed) == held[victim], "exactly the dead worker's clients lost their connection"
            assert len(answered) == len(clients) - held[victim] >= 1
            for answer in answered:
                assert _regions(answer) == expected, "the other worker's clicks are unaffected"

            while (victim in server.workers() or len(server.workers()) < 2) and time.monotonic() < deadline + 120:
                time.sleep(0.5)
            assert victim not in server.workers() and len(server.workers()) == 2, "gunicorn replaced the worker"
            for _ in range(4):  # both workers, the new one included, answer as before
                assert _regions(_click(server.url, f"http://{gate.host}/gated/scene.jpg", "PolygonLabels")) == expected
            assert any(r["type"] == "polygonlabels" for r in expected) or expected == [], "the stored format"

        downloads = tmp_path / "cache" / "downloads"
        for path in downloads.iterdir():
            if path.suffix == ".jpg":  # content-named: a complete file, never the partial one
                assert hashlib.sha1(path.read_bytes()).hexdigest() == path.stem
        assert (images / "scene.jpg").read_bytes() in [p.read_bytes() for p in downloads.glob("*.jpg")]


# --- a full cache disk -------------------------------------------------------------------------------


def _private_tmpfs(cache: Path, seed: Path, megabytes: int) -> tuple[str, ...]:
    """A command prefix that runs gunicorn in a mount namespace of its own (no root needed: a user
    namespace) where CACHE_DIR is a tmpfs of `megabytes`, seeded with the files of `seed`."""
    script = (
        f"mount -t tmpfs -o size={megabytes}m tmpfs {shlex.quote(str(cache))} && "
        f'cp {shlex.quote(str(seed))}/* {shlex.quote(str(cache))}/ && exec "$@"'
    )
    return ("unshare", "-rm", "sh", "-c", script, "sh")


@pytest.mark.slow
def test_a_full_cache_disk_keeps_cached_images_served_and_refuses_downloads_naming_the_disk(tmp_path):
    seed, cache, images = tmp_path / "seed", tmp_path / "cache", tmp_path / "images"
    for folder in (seed, cache, images):
        folder.mkdir()
    SCENE.write(seed / "scene.jpg")
    OTHER.write(seed / "other.jpg")
    SCENE.write(images / "remote.jpg")
    with static_server(images) as host:
        env = {"CACHE_DIR": str(cache), "MODEL_DIR": str(tmp_path / "models"), "IMAGE_HOSTS": host}
        with gunicorn_server(
            env, workers=1, threads=4, log_dir=tmp_path, wrapper=_private_tmpfs(cache, seed, 24)
        ) as server:
            inside = Path(f"/proc/{server.process.pid}/root") / cache.relative_to("/")
            first = _regions(_click(server.url, "scene.jpg"))
            assert (inside / "frames").is_dir() and list((inside / "frames").glob("*.rgb")), "the frame is on disk"

            filler = inside / "filler"
            with open(filler, "wb") as handle, pytest.raises(OSError, match="No space left"):
                while True:
                    handle.write(b"\0" * (1 << 20))
                    handle.flush()

            assert _regions(_click(server.url, "scene.jpg")) == first, "a cached image is served as before"
            other = _click(server.url, "other.jpg", context=rect_context((230, 130, 570, 470), 1600, 1200))
            assert other.status_code == 200, "a frame that cannot be stored is decoded in memory"
            refused = _click(server.url, f"http://{host}/remote.jpg")
            assert refused.status_code == 507, refused.text
            error = refused.json()["error"]
            assert (
                error.startswith("tasks[0].data.image: cannot store")
                and "no space left on the disk of CACHE_DIR" in error
            )
            assert not list((inside / "downloads").glob(".part-*")), "the partial download was removed"
            assert requests.get(f"{server.url}/health", timeout=5).status_code == 200

            filler.unlink()
            assert _regions(_click(server.url, f"http://{host}/remote.jpg")) == first, "space again: served"
            log = server.log.read_text()
        assert "decoding it in memory" in log and "Traceback" not in log
    assert not list(cache.iterdir()), "the tmpfs lived in the server's own mount namespace only"


# --- the settings store under concurrent /setup ------------------------------------------------------


@pytest.mark.slow
def test_concurrent_setups_from_several_workers_all_succeed_and_the_last_write_of_each_project_wins(tmp_path):
    """Four workers starting on a fresh MODEL_DIR at once, then 96 /setup calls at once from 12
    clients over 6 projects, while another process holds SQLite's write lock for 2 s."""
    env = {"CACHE_DIR": str(tmp_path / "cache"), "MODEL_DIR": str(tmp_path / "models")}
    formats = ("BrushLabels", "PolygonLabels", "RectangleLabels", "Brush")
    with gunicorn_server(env, workers=4, threads=4, timeout=90, log_dir=tmp_path, app=GEOMETRY_APP) as server:
        store = tmp_path / "models" / "sam2plus-settings.sqlite3"
        locker = sqlite3.connect(store, isolation_level=None, check_same_thread=False)
        locker.execute("BEGIN IMMEDIATE")  # a backup, or an operator's sqlite3 shell, writing

        def setup(n: int):
            project, fmt = f"{n % 6}.1795599678", formats[n % 4]
            body = {"project": project, "schema": label_config(fmt), "extra_params": {"return_format": {"type": fmt}}}
            return project, fmt, requests.post(f"{server.url}/setup", json=body, timeout=60)

        release = threading.Timer(2.0, lambda: locker.execute("COMMIT"))
        release.start()
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(setup, range(96)))
        release.join()
        locker.close()
        assert [a.status_code for _, _, a in answers] == [200] * 96, [
            a.text for _, _, a in answers if a.status_code != 200
        ]
        with sqlite3.connect(store) as db:
            stored = dict(db.execute("SELECT project, extra_params FROM project_params").fetchall())
        assert set(stored) == {f"{p}.1795599678" for p in range(6)}
        for project, params in stored.items():
            sent = {fmt for p, fmt, _ in answers if p == project}
            assert json.loads(params)["return_format"]["type"] in sent
            body = predict_body(json.loads(params)["return_format"]["type"], image="missing.jpg")
            answer = requests.post(f"{server.url}/predict", json={**body, "project": project}, timeout=30)
            assert answer.status_code == 400 and answer.json()["error"].startswith("tasks[0].data.image"), (
                "every worker reads the stored settings"
            )
        assert "Traceback" not in server.log.read_text()


def test_a_settings_store_locked_past_the_busy_timeout_is_a_503_to_retry(tmp_path, monkeypatch):
    client, cache = make_backend(tmp_path)
    assert client.post("/setup", json={"project": PROJECT, "extra_params": None}).status_code == 200
    monkeypatch.setattr(settings, "BUSY_TIMEOUT", 0.2)
    locker = sqlite3.connect(cache.parent / "models" / "sam2plus-settings.sqlite3", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        answer = client.post("/setup", json={"project": PROJECT, "extra_params": {"return_format": {"type": "Brush"}}})
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
        assert answer.get_json()["error"].startswith("the settings store in MODEL_DIR is locked by another process")
        assert client.post("/predict", json=predict_body()).status_code == 200, "reads go on (WAL)"
    finally:
        locker.execute("COMMIT")
        locker.close()
    assert client.post("/setup", json={"project": PROJECT, "extra_params": None}).status_code == 200


# --- hanging image hosts and Label Studio ----------------------------------------------------------


@pytest.mark.slow
def test_hanging_downloads_hold_neither_the_model_nor_other_requests(tmp_path):
    """One worker with 4 threads: two clicks wait on a download stuck halfway and one on a Label
    Studio that never answers; meanwhile a click on a cached image runs SAM2's encoder and is
    answered. The silent Label Studio gives up at FETCH_TIMEOUT with a 422; the stuck downloads
    finish when their host goes on."""
    from tests.support.catalogue import silent_host

    images = tmp_path / "images"
    images.mkdir()
    SCENE.write(images / "scene.jpg")
    (tmp_path / "cache").mkdir()
    OTHER.write(tmp_path / "cache" / "other.jpg")
    with gated_server(images) as gate, silent_host() as label_studio:
        env = {
            "CACHE_DIR": str(tmp_path / "cache"),
            "MODEL_DIR": str(tmp_path / "models"),
            "IMAGE_HOSTS": gate.host,
            "LABEL_STUDIO_URL": f"http://{label_studio}",
            "FETCH_TIMEOUT": "45",
        }
        with gunicorn_server(env, workers=1, threads=4, log_dir=tmp_path) as server:
            with ThreadPoolExecutor(3) as pool:
                stuck = [pool.submit(_click, server.url, f"http://{gate.host}/gated/scene.jpg") for _ in range(2)]
                for _ in stuck:
                    assert gate.waiting.acquire(timeout=30)
                silent = pool.submit(_click, server.url, "/data/upload/1/scene.jpg")
                contexts = [
                    rect_context((230, 130, 570, 470), 1600, 1200),
                    point_context([(400, 300), (420, 310)], 1600, 1200),
                ]
                cached = [_click(server.url, "other.jpg", context=context) for context in contexts]
                assert not any(f.done() for f in stuck), "the downloads are still stuck"
                assert not silent.done(), "the cached clicks did not wait for the silent Label Studio"
                require_some([_regions(answer) for answer in cached])
                metrics = requests.get(f"{server.url}/metrics?format=json", timeout=10).json()
                assert metrics["encoder_runs"] == 1, "the cached image's click ran the encoder meanwhile"
                gate.gate.set()
                done = [future.result(120) for future in stuck]
                timed_out = silent.result(120)
            assert timed_out.status_code == 422 and "timed out" in timed_out.json()["error"]
            assert [answer.status_code for answer in done] == [200, 200]


# --- a dripping image host ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_dripping_host_is_cut_at_the_deadline_and_when_the_click_s_client_leaves(tmp_path):
    """Issue 21, under gunicorn: a host that answers `Content-Length: 1000000` and then a byte
    every 2 s kept a click downloading for minutes (FETCH_TIMEOUT bounded each read, not the
    download) and did not notice its client leave. Now the click is a 422 at FETCH_TIMEOUT, and a
    click whose client closes its connection stops reading from the host within a few seconds
    (the server answers it 499 and logs why)."""
    fetch_timeout = 6.0
    with dripping_server(interval=2.0) as drip:
        env = {
            "CACHE_DIR": str(tmp_path / "cache"),
            "MODEL_DIR": str(tmp_path / "models"),
            "IMAGE_HOSTS": drip.host,
            "FETCH_TIMEOUT": str(fetch_timeout),
        }
        image = f"http://{drip.host}/drip.png"
        with gunicorn_server(env, workers=1, threads=4, log_dir=tmp_path, app=GEOMETRY_APP) as server:
            body = json.dumps(predict_body(image=image)).encode()
            port = int(server.url.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(
                    b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                assert drip.started.acquire(timeout=30), "the click is downloading"
                time.sleep(0.5)
            left = time.monotonic()
            deadline = left + fetch_timeout
            while drip.drips[0].closed is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert drip.drips[0].closed is not None, "the download went on after its client left"
            assert drip.drips[0].closed - left < 3, f"noticed after {drip.drips[0].closed - left:.1f} s"

            started = time.monotonic()
            answer = requests.post(f"{server.url}/predict", json=predict_body(image=image), timeout=60)
            elapsed = time.monotonic() - started
            assert answer.status_code == 422 and "timed out" in answer.json()["error"], answer.text
            assert fetch_timeout - 0.5 < elapsed < fetch_timeout + 2, f"{elapsed:.1f} s"
            assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
            log = server.log.read_text()
        assert "the client went away; stopped downloading" in log and "Traceback" not in log
