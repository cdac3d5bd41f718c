"""Secrets are never logged (docs/security.md: What the backend writes and logs): with
LABEL_STUDIO_API_KEY and BASIC_AUTH_PASS set, requests that succeed and requests that fail (wrong
credentials, Label Studio refusing the key, bad settings, bad clicks) leave neither in the log,
at DEBUG level, in-process and under gunicorn; a LABEL_STUDIO_URL with a password in it is
refused at start without showing the password.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import logging
import os
import subprocess
import threading

import pytest
import requests

from tests.support.inprocess import PROJECT, SCENE, make_backend, predict_body
from tests.support.scenes import label_config
from tests.support.servers import GUNICORN, REPO, TEST_MODEL, free_port, gunicorn_server

KEY = "lskey-0f9e8d7c6b5a-SECRET"
PAT = (
    "eyJhbGciOiJIUzI1NiJ9."
    + base64.urlsafe_b64encode(b'{"token_type":"refresh","exp":9999999999}').decode().rstrip("=")
    + ".c2lnbmF0dXJlLVNFQ1JFVA"
)
USER, PASSWORD = "annotator", "pw-5ECRET-93x"


def _secrets(*keys: str) -> list[str]:
    """Each secret and the forms it travels in (the basic-auth header's base64, the token header)."""
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return [PASSWORD, token, *keys, *(key[-12:] for key in keys)]


@contextlib.contextmanager
def refusing_label_studio():
    """A stand-in for Label Studio that answers every request 401 and records each one's Authorization
    header and body."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _refuse(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode(errors="replace")
            seen.append(f"{self.headers.get('Authorization', '')} {body}")
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"detail": "Invalid token."}')

        do_GET = do_POST = _refuse

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _traffic(send) -> list:
    """Requests that succeed and fail, through `send(method, path, json=..., headers=...)`."""
    right = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
    wrong = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}x".encode()).decode()}
    return [
        send("GET", "/health", headers={}),
        send("GET", "/versions", headers={}),
        send("GET", "/versions", headers=wrong),
        send("POST", "/setup", json={"project": PROJECT, "extra_params": {"bogus": 1}}, headers=right),
        send(
            "POST", "/setup", json={"project": PROJECT, "schema": label_config(), "extra_params": None}, headers=right
        ),
        send("POST", "/predict", json=predict_body(image="/data/upload/1/scene.jpg"), headers=right),
        send("POST", "/predict", json=predict_body(image="scene.jpg"), headers=right),
        send("POST", "/predict", json={"tasks": []}, headers=right),
        send("POST", "/webhook", json={"action": "ANNOTATION_CREATED"}, headers=right),
        send("GET", "/metrics", headers=right),
    ]


@pytest.mark.parametrize("key", [KEY, PAT], ids=["legacy-token", "personal-access-token"])
def test_secrets_never_reach_the_log_or_an_answer(tmp_path, caplog, key):
    with refusing_label_studio() as (label_studio, seen):
        client, _ = make_backend(
            tmp_path,
            label_studio_url=label_studio,
            label_studio_api_key=key,
            basic_auth_user=USER,
            basic_auth_pass=PASSWORD,
        )

        def send(method, path, **kwargs):
            answer = client.open(path, method=method, **kwargs)
            return answer.status_code, answer.get_data(as_text=True) + answer.status

        with caplog.at_level(logging.DEBUG):
            answers = _traffic(send)
    refused = 422 if key == KEY else 502  # the image, or the personal access token's refresh, refused
    assert [status for status, _ in answers] == [200, 401, 401, 400, 200, refused, 200, 400, 200, 200]
    assert any(key in request for request in seen), "Label Studio was sent the key"
    log = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert "401" in log, "the failures were logged"
    for secret in _secrets(key):
        assert secret not in log, f"{secret!r} in the log"
        assert not [text for _, text in answers if secret in text], f"{secret!r} in an answer"


@pytest.mark.slow
def test_under_gunicorn_at_debug_level_the_log_holds_no_secret(tmp_path):
    (tmp_path / "cache").mkdir()
    SCENE.write(tmp_path / "cache" / "scene.jpg")
    with refusing_label_studio() as (label_studio, seen):
        env = {
            "CACHE_DIR": str(tmp_path / "cache"),
            "MODEL_DIR": str(tmp_path / "models"),
            "LOG_LEVEL": "DEBUG",
            "LABEL_STUDIO_URL": label_studio,
            "LABEL_STUDIO_API_KEY": KEY,
            "BASIC_AUTH_USER": USER,
            "BASIC_AUTH_PASS": PASSWORD,
        }
        with gunicorn_server(env, workers=2, threads=4, log_dir=tmp_path) as server:

            def send(method, path, **kwargs):
                answer = requests.request(method, server.url + path, timeout=120, **kwargs)
                return answer.status_code, answer.text + answer.reason

            answers = _traffic(send)
            log = server.log.read_text()
    assert [status for status, _ in answers] == [200, 401, 401, 400, 200, 422, 200, 400, 200, 200]
    assert any(f"Token {KEY}" in request for request in seen), "Label Studio was sent the key"
    assert "[DEBUG]" in log and "401" in log
    for secret in _secrets(KEY):
        assert secret not in log, f"{secret!r} in the log"


@pytest.mark.slow
def test_a_password_in_label_studio_url_stops_the_start_without_being_shown(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        TEST_MODEL,
        CACHE_DIR=str(tmp_path),
        MODEL_DIR=str(tmp_path),
        PORT=str(free_port()),
        LABEL_STUDIO_URL=f"http://{USER}:{PASSWORD}@127.0.0.1:8080",
        BASIC_AUTH_USER=USER,
        BASIC_AUTH_PASS=PASSWORD,
    )
    done = subprocess.run([GUNICORN, "_wsgi:app"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "LABEL_STUDIO_URL='http://***@127.0.0.1:8080'" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr
