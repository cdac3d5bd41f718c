"""SETTINGS_URL (issue 19, item 1): the settings store is SQLite (the default) or PostgreSQL, with
the same meaning: the last write of a project wins, stored settings are validated again on read,
a write through one process is what every other reads. An unreachable database is one line at
start naming SETTINGS_URL with its password as ***; while it is down a click uses what its
process last read for the project, or gets a 503 with Retry-After, never the stock settings.

PostgreSQL is Debian's 15, run for real from a temporary folder (tests/support/postgres.py).
"""

from __future__ import annotations

import os
import subprocess

import psycopg
import pytest

from sam2plus.config import ConfigError, ServerConfig
from sam2plus.errors import RequestError
from sam2plus.params import parse_extra_params
from sam2plus.settings import SettingsUnavailable, open_settings, redact_url
from sam2plus.startup import PREFIX, check_environment
from tests.support.inprocess import PROJECT, make_backend, predict_body
from tests.support.postgres import PASSWORD, postgres_server
from tests.support.servers import GUNICORN, REPO, TEST_MODEL, free_port

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
