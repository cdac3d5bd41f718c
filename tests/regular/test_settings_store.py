"""SETTINGS_URL (issue 19, item 1): the settings store is SQLite (the default) or PostgreSQL, with
the same meaning: the last write of a project wins, stored settings are validated again on read,
a write through one process is what every other reads. An unreachable database is one line at
start naming SETTINGS_URL with its password as ***; while it is down a click uses what its
process last read for the project, or gets a 503 with Retry-After, never the stock settings.

PostgreSQL is Debian's 15, run for real from a temporary folder (tests/support/postgres.py).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
import requests

from sam2plus.config import ConfigError, ServerConfig
from sam2plus.errors import RequestError
from sam2plus.params import parse_extra_params
from sam2plus.settings import SettingsUnavailable, open_settings, redact_url
from sam2plus.startup import PREFIX, check_environment
from tests.support.inprocess import PROJECT, SCENE, make_backend, predict_body
from tests.support.postgres import PASSWORD, postgres_server
from tests.support.servers import GUNICORN, REPO, TEST_MODEL, free_port, gunicorn_server

POLYGON = {"return_format": {"type": "PolygonLabels"}}
RECTANGLE = {"return_format": {"type": "RectangleLabels"}}


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as server:
        yield server


def _stores(kind: str, tmp_path, postgres):
    """Two stores on the same settings, as two replicas (or workers) open them."""
    url = postgres.url if kind == "postgresql" else f"sqlite:///{tmp_path / 'shared' / 'settings.sqlite3'}"
    return open_settings(url, tmp_path / "unused"), open_settings(url, tmp_path / "unused")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_write_through_one_store_is_what_the_other_reads_and_the_last_write_wins(kind, tmp_path, postgres):
    first, second = _stores(kind, tmp_path, postgres)
    project = f"{kind}-{tmp_path.name}"
    assert second.load(project).is_stock
    first.save(project, parse_extra_params(POLYGON))
    assert second.load(project).return_format.type == "PolygonLabels"
    second.save(project, parse_extra_params(RECTANGLE))
    assert first.load(project).return_format.type == "RectangleLabels"


@pytest.mark.slow
def test_postgresql_settings_are_validated_again_on_read(postgres, tmp_path):
    store = open_settings(postgres.url, tmp_path)
    store.save("bad", parse_extra_params(POLYGON))
    with psycopg.connect(postgres.url, autocommit=True) as db:
        db.execute("UPDATE project_params SET extra_params = %s WHERE project = 'bad'", ('{"subpatching": 7}',))
    with pytest.raises(RequestError) as refused:
        store.load("bad")
    assert "subpatching" in str(refused.value)


def test_sqlite_stays_the_default_under_model_dir(tmp_path):
    store = open_settings(None, tmp_path / "models")
    store.save("p", parse_extra_params(POLYGON))
    assert (tmp_path / "models" / "sam2plus-settings.sqlite3").is_file()


def test_urls_in_messages_hide_the_password():
    assert redact_url("postgresql://me:pa55@db:5432/s") == "postgresql://me:***@db:5432/s"
    assert redact_url("postgresql://db/s?user=me&password=pa55") == "postgresql://db/s?user=me&password=***"
    assert redact_url("postgresql://me@db/s") == "postgresql://me@db/s"


def test_a_setting_url_of_another_kind_is_a_start_up_problem_naming_it():
    with pytest.raises(ConfigError) as refused:
        ServerConfig.from_env({"SETTINGS_URL": "mysql://me:pa55@db/s"})
    (line,) = refused.value.problems
    assert line.startswith("SETTINGS_URL='mysql://me:***@db/s' must be") and "pa55" not in line


@pytest.mark.slow
def test_an_unreachable_database_stops_gunicorn_with_one_line_naming_settings_url(tmp_path):
    url = f"postgresql://sam2plus:{PASSWORD}@127.0.0.1:{free_port()}/postgres"
    env = {
        **os.environ,
        **TEST_MODEL,
        "SETTINGS_URL": url,
        "CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_DIR": str(tmp_path / "models"),
        "PORT": str(free_port()),
    }
    done = subprocess.run([GUNICORN, "_wsgi:app"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith(PREFIX)]
    assert len(lines) == 1, done.stderr
    assert "SETTINGS_URL=postgresql://sam2plus:***@127.0.0.1:" in lines[0] and "refused" in lines[0].lower()
    assert PASSWORD not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_refusing_database_is_one_problem_with_the_password_hidden(postgres, tmp_path):
    url = postgres.url.replace(PASSWORD, "wrong-password")
    config = ServerConfig(
        device="cpu",
        model_config=TEST_MODEL["MODEL_CONFIG"],
        model_checkpoint="untrained",
        cache_dir=str(tmp_path / "cache"),
        model_dir=str(tmp_path / "models"),
        settings_url=url,
    )
    with pytest.raises(ConfigError) as refused:
        check_environment(config)
    (line,) = refused.value.problems
    assert "SETTINGS_URL=postgresql://sam2plus:***@" in line and "password authentication failed" in line
    assert "wrong-password" not in line


@pytest.mark.slow
def test_while_postgresql_is_down_a_click_uses_the_stored_settings_or_is_a_503_never_the_defaults(postgres, tmp_path):
    client, _ = make_backend(tmp_path, settings_url=postgres.url)
    assert client.post("/setup", json={"project": PROJECT, "extra_params": POLYGON}).status_code == 200
    assert client.post("/setup", json={"project": "other.1", "extra_params": POLYGON}).status_code == 200
    (tmp_path / "fresh").mkdir()
    fresh, _ = make_backend(tmp_path / "fresh", settings_url=postgres.url)  # a replica that read nothing yet
    answer = client.post("/predict", json=predict_body("PolygonLabels"))
    assert answer.status_code == 200 and answer.get_json()["results"][0]["result"][0]["type"] == "polygonlabels"
    postgres.stop("immediate")
    try:
        answer = client.post("/predict", json=predict_body("PolygonLabels"))
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json()["results"][0]["result"][0]["type"] == "polygonlabels"
        refused = fresh.post("/predict", json=predict_body("PolygonLabels"))
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert "SETTINGS_URL" in refused.get_json()["error"]
        setup = client.post("/setup", json={"project": PROJECT, "extra_params": RECTANGLE})
        assert setup.status_code == 503 and setup.headers["Retry-After"]
    finally:
        postgres.start()
    answer = fresh.post("/predict", json=predict_body("PolygonLabels"))
    assert answer.status_code == 200 and answer.get_json()["results"][0]["result"][0]["type"] == "polygonlabels"


def test_the_store_raises_unavailable_without_a_database(tmp_path):
    store = open_settings(f"postgresql://me:pa55@127.0.0.1:{free_port()}/s", tmp_path)
    with pytest.raises(SettingsUnavailable) as down:
        store.load("p")
    assert "pa55" not in str(down.value) and "***" in str(down.value)


# -- issue 25 item 3: a PostgreSQL that stalls or lies ------------------------------------------


def _click(url: str, project: str, fmt: str = "PolygonLabels") -> tuple[int, dict, float]:
    started = time.monotonic()
    answer = requests.post(f"{url}/predict", json={**predict_body(fmt), "project": project}, timeout=120)
    return answer.status_code, answer.json(), time.monotonic() - started


@pytest.fixture
def gunicorn_on_postgres(postgres, tmp_path):
    """A real gunicorn (one worker, 4 threads) on the shared PostgreSQL, SETTINGS_TIMEOUT=2."""
    (tmp_path / "cache").mkdir()
    SCENE.write(tmp_path / "cache" / "scene.jpg")
    env = {
        "SETTINGS_URL": postgres.url,
        "SETTINGS_TIMEOUT": "2",
        "CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_DIR": str(tmp_path / "models"),
    }
    with gunicorn_server(env, workers=1, threads=4, log_dir=tmp_path) as server:
        yield server


PROJECTS = ["known.1", "fresh.2", "fresh.3", "known.1"]  # one click for each thread of the worker


@pytest.mark.slow
def test_a_locked_settings_table_costs_a_click_a_bounded_wait_and_never_holds_health(gunicorn_on_postgres, postgres):
    """The review's case: `LOCK TABLE project_params IN ACCESS EXCLUSIVE MODE` held for 45 s made
    every click wait 44 s and /health time out (before: one lock per process held across the query,
    no statement or lock timeout). Now a click waits SETTINGS_TIMEOUT, then uses the settings its
    process last read, or is a 503 naming SETTINGS_URL; /health answers throughout."""
    url = gunicorn_on_postgres.url
    known = "known.1"
    assert requests.post(f"{url}/setup", json={"project": known, "extra_params": POLYGON}, timeout=60).ok
    assert _click(url, known)[0] == 200
    held = 45.0
    with psycopg.connect(postgres.url) as db:  # a transaction: the lock lasts until it ends
        db.execute("LOCK TABLE project_params IN ACCESS EXCLUSIVE MODE")
        locked = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            clicks = [pool.submit(_click, url, project) for project in PROJECTS]
            health = []
            while not all(click.done() for click in clicks) and time.monotonic() - locked < held - 5:
                started = time.monotonic()
                assert requests.get(f"{url}/health", timeout=10).status_code == 200
                health.append(time.monotonic() - started)
                time.sleep(0.5)
            answers = [click.result() for click in clicks]
        assert time.monotonic() - locked < held - 5, "the clicks waited for the lock"
        db.rollback()
    for (status, body, _), project in zip(answers, PROJECTS, strict=True):
        if project == known:
            assert status == 200 and body["results"][0]["result"][0]["type"] == "polygonlabels", body
        else:
            assert status == 503 and "SETTINGS_URL" in body["error"], body
    # 8 clicks on 4 threads: /health may wait for a thread, which a click frees within SETTINGS_TIMEOUT
    assert max(health) < 2 + 2, f"/health took {max(health):.1f} s while the table was locked"
    assert _click(url, "fresh.2", "BrushLabels")[0] == 200  # the database answers again: a new project's stock settings


@pytest.mark.slow
def test_stored_rows_that_are_not_settings_are_422s_naming_them_never_500s(gunicorn_on_postgres, postgres):
    """Rows written straight into the table: not JSON, 100,000-deep nesting, 200 MB of text
    (before: 500, 500 with a RecursionError, and a 400 after 1 s with +556 MB kept in the cache)."""
    url = gunicorn_on_postgres.url
    rows = {"notjson.1": "{not json", "deep.1": "[" * 100_000 + "]" * 100_000}
    with psycopg.connect(postgres.url, autocommit=True) as db:
        for project, text in rows.items():
            db.execute("INSERT INTO project_params VALUES (%s, %s, now())", (project, text))
        db.execute("INSERT INTO project_params VALUES ('big.1', repeat('x', 200000000), now())")
    (worker,) = gunicorn_on_postgres.workers()
    before = _resident(worker)
    expected = {"notjson.1": "are not JSON", "deep.1": "nest deeper than 64", "big.1": "200000000 bytes"}
    for project, problem in expected.items():
        status, body, seconds = _click(url, project)
        assert status == 422, body
        assert body["error"].startswith(f'extra_params stored for project "{project}": ') and problem in body["error"]
        assert seconds < 10
    assert _resident(worker) - before < 64 << 20, "the 200 MB row reached the worker"


def _resident(pid: int) -> int:
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1)) << 10


@pytest.mark.slow
def test_a_frozen_database_server_is_cut_by_the_watchdog(postgres, tmp_path):
    """PostgreSQL's processes stopped (SIGSTOP): its kernel still acknowledges, so neither its own
    timeouts nor TCP keepalives fire. A read is cut a second after SETTINGS_TIMEOUT by the watchdog
    shutting the connection's socket down, then gives the settings last read (or raises), and the
    store works again once the server goes on."""
    store = open_settings(postgres.url, tmp_path, timeout=1)
    store.save("frozen.1", parse_extra_params(POLYGON))
    assert store.load("frozen.1").return_format.type == "PolygonLabels"
    postmaster = int((postgres.root / "data" / "postmaster.pid").read_text().split()[0])
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    processes = [postmaster, *map(int, children)]
    for pid in processes:
        os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert store.load("frozen.1").return_format.type == "PolygonLabels"
        with pytest.raises(SettingsUnavailable):
            store.load("never.read")
        # each read: SETTINGS_TIMEOUT + the watchdog's second, or libpq's least connect timeout (2 s)
        assert time.monotonic() - started < 10, f"{time.monotonic() - started:.1f} s (before: no end)"
    finally:
        for pid in processes:  # a child that was exiting is reaped once the postmaster goes on
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert store.load("frozen.1").return_format.type == "PolygonLabels"
