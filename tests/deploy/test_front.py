"""The buffering front (haproxy/; docs/security.md: Slow clients and the front), real HAProxy and gunicorn.

Issue 21: THREADS sockets that send a request line and then a header line a second hold every
thread of gunicorn's gthread worker, and `/health` times out. The slow tests start the real
gunicorn (the product's app around the geometry test double, so that a worker starts in a
second) and the real `haproxy` with the shipped configuration, both on free loopback ports, and
send 2 x THREADS slow clients at each: gunicorn alone stops answering, behind the front it does not.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import dockerfile
import pytest
import requests

from sam2plus.jsonbody import body_seconds
from tests.support.front import (
    FRONT,
    HAPROXY_DIR,
    SINGLE,
    DribbledBodies,
    SlowClients,
    haproxy_binary,
    haproxy_front,
    read_answer,
    send_whole_body,
    status_line,
    timed_get,
)
from tests.support.inprocess import SCENE, predict_body
from tests.support.servers import gunicorn_server, stop, wsgi_server

GEOMETRY_APP = "tests.support.geometry_app:app"
THREADS = 4
SLOW = 2 * THREADS  # slow clients per test: twice the threads gunicorn has
REQUEST_TIMEOUT = 10  # front.cfg's `timeout http-request`, seconds
IMAGE = dockerfile.parse_file(str(HAPROXY_DIR / "Dockerfile"))


def check_config(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [haproxy_binary(), "-c", "-f", str(FRONT), "-f", str(SINGLE)],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def directive(section: str, name: str) -> str:
    """The value of directive `name` in the section of front.cfg whose header is `section`."""
    lines = FRONT.read_text().splitlines()
    start = lines.index(section)
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break
        words = line.split("#")[0].split()
        if words[: len(name.split())] == name.split():
            return " ".join(words[len(name.split()) :])
    raise AssertionError(f"{name} not in {section}")


# --- the configuration and the image, without running them ----------------------------------------


def test_the_shipped_configuration_is_valid_and_needs_the_backend_address():
    assert check_config({"BACKEND_ADDR": "127.0.0.1:9090"}).returncode == 0
    missing = check_config({})
    assert missing.returncode != 0 and "single.cfg" in missing.stderr
    # A name that does not resolve yet (a container still starting) is not fatal: the checks find it later.
    assert check_config({"BACKEND_ADDR": "sam2plus-not-yet.invalid:9090"}).returncode == 0


def test_the_front_waits_for_whole_requests_within_a_header_timeout():
    assert "option http-buffer-request" in FRONT.read_text().split("frontend front")[0]
    assert directive("defaults", "timeout http-request") == f"{REQUEST_TIMEOUT}s"
    assert directive("global", "tune.bufsize") == str(1 << 20)
    assert int(directive("frontend front", "maxconn")) < int(directive("global", "maxconn"))


@pytest.mark.parametrize(
    "path", sorted((HAPROXY_DIR / "errors").rglob("*.http")), ids=lambda p: str(p.relative_to(HAPROXY_DIR))
)
def test_the_fronts_own_errors_are_json_whose_reason_phrase_says_what_happened(path):
    head, body = path.read_bytes().split(b"\r\n\r\n", 1)
    status, *headers = head.decode().split("\r\n")
    version, code, reason = status.split(" ", 2)
    assert (version, code) == ("HTTP/1.1", path.stem)
    fields = dict(h.split(": ", 1) for h in headers)
    assert fields["Content-Type"] == "application/json" and int(fields["Content-Length"]) == len(body)
    assert json.loads(body) == {"error": reason} and reason.startswith("front: ")


def test_the_front_image_is_debians_haproxy_run_by_a_user_with_a_healthcheck():
    by_cmd = {}
    for instruction in IMAGE:
        by_cmd.setdefault(instruction.cmd, []).append(instruction)
    assert [i.value for i in by_cmd["FROM"]] == [("debian:bookworm-slim",)], "no registry but Debian's is reachable"
    (run,) = by_cmd["RUN"]
    assert "apt-get install" in run.value[0] and " haproxy" in run.value[0] and "useradd --uid 1000" in run.value[0]
    assert by_cmd["USER"][-1].value[0].split(":")[0] not in ("0", "root")
    copied = {source.rstrip("/") for i in by_cmd["COPY"] for source in i.value[:-1]}
    assert copied == {"front.cfg", "single.cfg", "replicas.cfg", "errors"}
    assert all((HAPROXY_DIR / s).exists() for s in copied)
    (cmd,) = by_cmd["CMD"]
    assert cmd.json and cmd.value[0] == "haproxy" and "-db" in cmd.value
    assert [v for v in cmd.value if v.endswith(".cfg")] == [
        "/etc/sam2plus-front/front.cfg",
        "/etc/sam2plus-front/single.cfg",
    ]
    assert by_cmd["HEALTHCHECK"][0].json and "/front/health" in " ".join(by_cmd["HEALTHCHECK"][0].value)


def image_healthcheck(front_addr: str) -> int:
    """Exit status of the image's HEALTHCHECK command, run here with FRONT_ADDR."""
    (check,) = [i for i in IMAGE if i.cmd == "HEALTHCHECK"]
    argv = list(check.value[1:])  # after "CMD"
    return subprocess.run(argv, env={"PATH": os.environ["PATH"], "FRONT_ADDR": front_addr}, timeout=30).returncode


# --- the real gunicorn and HAProxy ------------------------------------------------------------------


@contextlib.contextmanager
def geometry_backend(folder: Path, max_request_bytes: int = 2_000_000):
    """gunicorn with THREADS threads serving the product's app (geometry test double) and a scene."""
    (folder / "cache").mkdir(exist_ok=True)
    SCENE.write(folder / "cache" / "scene.jpg")
    env = {
        "CACHE_DIR": str(folder / "cache"),
        "MODEL_DIR": str(folder / "models"),
        "MAX_REQUEST_BYTES": str(max_request_bytes),
    }
    with gunicorn_server(env, workers=1, threads=THREADS, timeout=60, log_dir=folder, app=GEOMETRY_APP) as server:
        yield server


@pytest.fixture
def backend(tmp_path):
    with geometry_backend(tmp_path) as server:
        yield server


@pytest.fixture
def front(backend, tmp_path):
    with haproxy_front(backend.url.removeprefix("http://"), log_dir=tmp_path) as running:
        yield running


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def click(url: str, timeout: float = 10) -> list:
    """A click (rectangle around the scene's disc): the regions answered."""
    answer = requests.post(f"{url}/predict", json=predict_body(), timeout=timeout)
    assert answer.status_code == 200, answer.text
    return answer.json()["results"][0]["result"]


def report(what: str, timings: list[tuple[float, int | None]]) -> None:
    """Print /health latencies for the record (pytest -s shows them)."""
    shown = ", ".join(f"{seconds * 1000:.0f} ms {status or 'no answer'}" for seconds, status in timings)
    print(f"\n/health {what}: {shown}")


@pytest.mark.slow
@pytest.mark.parametrize("body", [False, True], ids=["slow-headers", "slow-body"])
def test_without_the_front_slow_clients_hold_every_gunicorn_thread(backend, body):
    """The reproduction: what the front is for. 2 x THREADS slow clients straight at gunicorn."""
    with SlowClients(*host_port(backend.url), SLOW, body=body) as slow:
        assert slow.connected == SLOW
        timings = [timed_get(f"{backend.url}/health", timeout=3) for _ in range(2)]
    report(f"straight at gunicorn, {SLOW} slow clients ({'body' if body else 'headers'})", timings)
    assert [status for _, status in timings] == [None, None], "gunicorn kept a thread free: no reproduction"
    assert timed_get(f"{backend.url}/health", timeout=10)[1] == 200, "and serves again once they leave"


@pytest.mark.slow
@pytest.mark.parametrize("body", [False, True], ids=["slow-headers", "slow-body"])
def test_behind_the_front_slow_clients_leave_health_and_clicks_answering(front, body):
    baseline = [timed_get(f"{front.url}/health", timeout=5) for _ in range(3)]
    started = time.monotonic()
    with SlowClients(front.host, front.port, SLOW, body=body) as slow:
        time.sleep(2)  # the slow clients have sent a few lines (or bytes) each
        timings = [timed_get(f"{front.url}/health", timeout=3) for _ in range(3)]
        regions = click(front.url)
        time.sleep(max(0.0, started + REQUEST_TIMEOUT + 2 - time.monotonic()))
        answers = slow.answers()
    report("through the front, no attack", baseline)
    report(f"through the front, {SLOW} slow clients ({'body' if body else 'headers'})", timings)
    assert [status for _, status in timings] == [200, 200, 200]
    assert max(seconds for seconds, _ in timings) < 1.0
    assert len(regions) == 1 and regions[0]["type"] == "brushlabels"  # the disc, as without the attack
    # Each slow client was answered by HAProxy itself once `timeout http-request` ran out (headers
    # that never end get HAProxy 2.6's built-in 408, which no errorfile replaces; a body, the JSON one).
    reason = (
        b"front: the request body did not arrive within 10 s (timeout http-request)" if body else b"Request Time-out"
    )
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 408 " + reason] * SLOW
    assert front.logged(b"<NOSRV>"), "HAProxy's log: the 408s reached no server"


@pytest.mark.slow
def test_bodies_larger_than_the_buffer_take_at_most_two_gunicorn_threads(backend, front):
    """A body HAProxy cannot hold whole (over 1 MiB) is streamed to gunicorn: such requests are
    let through two at a time, so that 2 x THREADS of them stalling mid-body still leave threads
    free. (Without `maxconn 2` in single.cfg, the click below times out.)"""
    sockets = []
    try:
        for n in range(SLOW):  # each from its own address: one address gets one large body at a time
            sock = socket.create_connection((front.host, front.port), timeout=5, source_address=(f"127.0.0.{n + 2}", 0))
            # Within MAX_REQUEST_BYTES (2000000 here), so gunicorn reads it rather than answering 413 at once.
            head = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1900000\r\n\r\n"
            sock.sendall(head.encode() + b"[" + b" " * (1100 << 10))  # more than the buffer, then nothing
            sockets.append(sock)
        time.sleep(2)
        timings = [timed_get(f"{front.url}/health", timeout=3) for _ in range(3)]
        regions = click(front.url)
    finally:
        for sock in sockets:
            sock.close()
    report(f"through the front, {SLOW} clients stalling in bodies larger than the buffer", timings)
    assert [status for _, status in timings] == [200, 200, 200]
    assert len(regions) == 1


BAD_REQUESTS = [
    ("POST", "/predict", b'{"tasks": []}'),
    ("POST", "/predict", b'{"tasks": [{"id": 1, "data": {"image": "scene.jpg"}}], "params": {"context": 7}}'),
    ("POST", "/predict", b"{not json"),
    ("POST", "/setup", b'{"project": "p", "extra_params": {"no_such_key": 1}}'),
    ("POST", "/setup", json.dumps({"project": "p", "extra_params": {f"key_{n}": 1 for n in range(30)}}).encode()),
    ("GET", "/no/such/path", b""),
    # Larger than the buffer, within MAX_REQUEST_BYTES: through the streamed backend, read whole, not JSON.
    ("POST", "/predict", b"[" + b" " * 1_500_000),
]


@pytest.mark.slow
def test_json_errors_and_reason_phrases_pass_through_the_front_unchanged(backend, front):
    """Label Studio shows the reason phrase of an error: HAProxy must pass it on as gunicorn sent it."""
    reasons = []
    for method, path, body in BAD_REQUESTS:
        answers = [
            requests.request(method, url + path, data=body, headers={"Content-Type": "application/json"}, timeout=30)
            for url in (backend.url, front.url)
        ]
        direct, proxied = answers
        assert 400 <= direct.status_code < 500, (path, direct.status_code)
        assert (proxied.status_code, proxied.reason) == (direct.status_code, direct.reason), path
        assert proxied.headers["Content-Type"] == direct.headers["Content-Type"]
        if direct.headers["Content-Type"] == "application/json":
            assert {**proxied.json(), "request_id": None} == {**direct.json(), "request_id": None}
            assert proxied.json()["request_id"] == proxied.headers["X-Request-Id"]
        reasons.append(proxied.reason)
    assert max(len(reason) for reason in reasons) > 200, "long reason phrases pass too"
    assert front.logged(b" sam2plus_streamed/backend "), "the large body took the streamed backend"


@pytest.mark.slow
def test_with_the_backend_down_the_front_answers_json_and_its_healthcheck_fails(backend, front):
    front_addr = f"{front.host}:{front.port}"
    assert image_healthcheck(front_addr) == 0
    stop(backend.process)
    deadline = time.monotonic() + 15  # the checks (every 2 s, 2 failures) mark the server down
    while (own := requests.get(f"{front.url}/front/health", timeout=10)).status_code != 503:
        assert time.monotonic() < deadline, own.status_code
        time.sleep(0.5)
    assert image_healthcheck(front_addr) != 0
    answer = requests.get(f"{front.url}/health", timeout=10)
    assert (answer.status_code, answer.reason) == (503, "front: no backend is ready (starting, or down)")
    assert answer.json() == {"error": answer.reason}


def echo_headers(environ, start_response):
    """TEST DOUBLE backend: answers /health, and echoes the request headers it got as JSON."""
    headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(headers).encode()]


@pytest.mark.slow
def test_the_backend_sees_the_clients_address_in_x_forwarded_for(tmp_path: Path):
    with wsgi_server(echo_headers) as url, haproxy_front(url.removeprefix("http://"), log_dir=tmp_path) as running:
        seen = requests.get(f"{running.url}/anything", timeout=10).json()
    assert seen["X-Forwarded-For"] == "127.0.0.1"


# --- issue 25: the 413 that arrived as a reset, and the large-body slots held by dribbling ---------------

TOO_LARGE = "HTTP/1.1 413 body: larger than MAX_REQUEST_BYTES=2000000 (1.90735 MiB), the largest request body"


@pytest.mark.slow
@pytest.mark.parametrize("through", ["gunicorn", "front"])
def test_a_413_for_an_oversize_body_reaches_the_client_whole(backend, front, through):
    """A 40 MB body against MAX_REQUEST_BYTES=2000000, sent whole before the answer is read (as
    requests and Label Studio do). gunicorn answered 413 without reading the body and closed on the
    unread bytes: straight at gunicorn the client's send failed (broken pipe, 11 tries in 12), through
    the front half the answers were lost (an empty reply). Now the body is read and dropped after the
    answer (jsonbody.discard_body) and every client reads the 413 and its reason."""
    host, port = host_port(backend.url) if through == "gunicorn" else (front.host, front.port)
    # Each from its own address: right after an early answer the front may still be passing the
    # refused body on, and one address gets one large body at a time (the 429 of the test below).
    outcomes = [send_whole_body(host, port, 40_000_000, source=f"127.0.0.{n + 10}") for n in range(5)]
    assert [problem for problem, _ in outcomes] == [""] * 5, outcomes
    assert all(line.startswith(TOO_LARGE) for _, line in outcomes), outcomes
    assert timed_get(f"{backend.url}/health", timeout=5)[1] == 200


@pytest.mark.slow
def test_a_dribbled_body_gets_a_408_after_its_deadline(backend):
    """Straight at gunicorn: a body of 1000 bytes announced, a byte a second: 408 naming `body` once
    body_seconds(1000) (10 s) have passed, and the thread is free again."""
    started = time.monotonic()
    with DribbledBodies(*host_port(backend.url), ["127.0.0.1"], length=1000, first=1, interval=1.0) as dribbled:
        answer = read_answer(dribbled.sockets[0], timeout=30)
    seconds = time.monotonic() - started
    assert status_line(answer).startswith("HTTP/1.1 408 body: did not arrive within 10 s"), answer[:300]
    assert body_seconds(1000) <= seconds < body_seconds(1000) + 3


@pytest.mark.slow
def test_dribbling_clients_cannot_hold_the_large_body_slots(tmp_path):
    """Issue 25: two clients each sent half of a large body, then a byte every few seconds, and held
    both of the front's large-body slots for as long as they chose; a third large body got a 503 after
    60 s saying "no backend is ready". Now a second large body from the same address is refused at
    once (429), a waiting one gets a 503 saying the slots were busy, and the backend cuts a dribbled
    body at its deadline (408), which frees its slot for the next large body."""
    length = 3_900_000  # within MAX_REQUEST_BYTES=4000000: its deadline, about 40 s, outlasts the front's queue (30 s)
    deadline = body_seconds(length)
    with geometry_backend(tmp_path, max_request_bytes=4_000_000) as server:
        with haproxy_front(server.url.removeprefix("http://"), log_dir=tmp_path) as running:
            host, port = running.host, running.port
            started = time.monotonic()
            with DribbledBodies(host, port, ["127.0.0.1", "127.0.0.2"], length, first=2_000_000):
                time.sleep(1)
                same_address = send_whole_body(host, port, 1_500_000, source="127.0.0.1")
                refused_at = time.monotonic() - started
                waited = send_whole_body(host, port, 1_500_000, source="127.0.0.3")
                gave_up_at = time.monotonic() - started
                after = send_whole_body(host, port, 1_500_000, source="127.0.0.4")
                served_at = time.monotonic() - started
    print(
        f"\nlarge-body slots: same address {same_address[1][:60]!r} at {refused_at:.1f} s; waiting "
        f"{waited[1][:70]!r} at {gave_up_at:.1f} s; next {after[1][:60]!r} at {served_at:.1f} s "
        f"(the dribbled bodies' deadline {deadline:.1f} s)"
    )
    assert same_address[1].startswith("HTTP/1.1 429 front: another large request body from this address")
    assert refused_at < 3
    assert waited[1] == "HTTP/1.1 503 front: every large-body slot stayed busy for 30 s (timeout queue); try again"
    assert 30 <= gave_up_at < 34
    # The dribbled bodies were cut at their deadline; the next large body was then served by the backend.
    assert after[1].startswith("HTTP/1.1 400 body: must be a JSON object"), after
    assert served_at < deadline + 5
