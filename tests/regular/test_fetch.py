"""sam2plus.fetch: task image values -> local files, against real HTTP servers on 127.0.0.1.

The servers here are small stand-ins started by the tests (http.server in a thread). The one
answering /api/token/refresh/ plays Label Studio's token endpoint for personal access tokens,
the one answering /tasks/<id>/presign/ plays its presign redirect to an object store; the real
Label Studio and a real S3 server are exercised by the end-to-end tests in tests/e2e. A
"capture" server stands for an attacker's host: it must see no connection at all.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import contextvars
import hashlib
import json
import multiprocessing
import os
import socket
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests

from sam2plus.downloads import EVICTION_LOCK, USAGE
from sam2plus.errors import RequestError, Stopped
from sam2plus.fetch import ImageFetcher, LabelStudioAuth
from tests.support.faults import dripping_server
from tests.support.inprocess import make_backend, predict_body
from tests.support.servers import gunicorn_server

FIELD = "data.image"
KEY = "0123456789abcdef0123456789abcdef01234567"
PNG = b"\x89PNG\r\n\x1a\n" + b"pretend image bytes " * 50
LOOPBACK = ("127.0.0.1",)  # IMAGE_HOSTS naming the test servers' address (any port)


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


# ---------------------------------------------------------------- a tiny HTTP server


class Server:
    """http.server on 127.0.0.1 in a thread. `routes` maps a path (query included) to
    handler(request) -> (status, headers, body), `fallback` serves other paths; every
    connection is counted and every request recorded."""

    def __init__(self):
        self.routes = {}
        self.fallback = None
        self.requests = []
        self.connections = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                outer.requests.append(request)
                route = outer.routes.get(self.path) or outer.routes.get(self.path.split("?")[0]) or outer.fallback
                status, headers, payload = route(request) if route else (404, {}, b"not found")
                self.send_response(status)
                if "Content-Length" not in headers and headers.get("X-No-Length") is None:
                    headers = {**headers, "Content-Length": str(len(payload))}
                for name, value in headers.items():
                    if name != "X-No-Length":
                        self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD" and status not in (204, 304):
                    try:
                        self.wfile.write(payload)
                    except (BrokenPipeError, ConnectionResetError):
                        pass

            do_GET = do_POST = _serve

            def log_message(self, *args):
                pass

        class Counting(ThreadingHTTPServer):
            def get_request(self):
                accepted = super().get_request()
                outer.connections += 1
                return accepted

        self.httpd = Counting(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.netloc = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.netloc}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def gets(self, path):
        return [r for r in self.requests if r["method"] == "GET" and r["path"] == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def make_server():
    servers = []

    def make():
        servers.append(Server())
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def cache_dir(tmp_path):
    path = tmp_path / "cache"
    path.mkdir()
    return path


def static(body, headers=None, status=200):
    return lambda request: (status, dict(headers or {}), body)


def requires_token(body, key=KEY):
    """A Label Studio stand-in for /data/upload/...: 401 unless `Authorization: Token <key>`."""

    def handle(request):
        if request["headers"].get("Authorization") != f"Token {key}":
            return 401, {}, b'{"detail": "Authentication credentials were not provided."}'
        return 200, {"Content-Type": "image/png"}, body

    return handle


def downloads(cache_dir: Path):
    folder = cache_dir / "downloads"
    return sorted(p.name for p in folder.iterdir() if p.name not in (EVICTION_LOCK, USAGE)) if folder.exists() else []


def refused(call, status):
    with pytest.raises(RequestError) as caught:
        call()
    error = caught.value
    assert error.status == status, str(error)
    assert error.field == FIELD and str(error).startswith(FIELD + ":")
    return str(error)


# ---------------------------------------------------------------- files inside CACHE_DIR


def test_file_inside_cache_dir(cache_dir):
    (cache_dir / "tasks").mkdir()
    image = cache_dir / "tasks" / "my image.png"
    image.write_bytes(PNG)
    fetcher = ImageFetcher(cache_dir)

    for url in (str(image), "tasks/my image.png", image.as_uri(), "file://" + str(image)):
        local = fetcher.fetch(url, FIELD)
        assert local.path == image.resolve(), url
        assert local.digest == sha1(PNG), url


def test_cache_dir_digest_follows_content(cache_dir):
    image = cache_dir / "a.png"
    image.write_bytes(PNG)
    fetcher = ImageFetcher(cache_dir)
    first = fetcher.fetch("a.png", FIELD).digest
    image.write_bytes(PNG + b"changed")
    assert fetcher.fetch("a.png", FIELD).digest == sha1(PNG + b"changed") != first


def test_unusable_local_names_are_refused_not_crashed_on(cache_dir):
    for url in ("a" * 5000 + ".png", "tasks/" + "b" * 300 + "/x.png", "nul\x00.png", "tab\t.png"):
        refused(lambda url=url: ImageFetcher(cache_dir).fetch(url, FIELD), 400)


def test_paths_outside_cache_dir_refused(tmp_path, cache_dir):
    outside = tmp_path / "outside.png"
    outside.write_bytes(PNG)
    (cache_dir / "link.png").symlink_to(outside)
    fetcher = ImageFetcher(cache_dir)

    for url in (
        "/etc/passwd",
        "file:///etc/passwd",
        "../outside.png",
        "sub/../../outside.png",
        str(cache_dir / ".." / "outside.png"),
        str(outside),
        "link.png",
        "file://" + str(outside),
        "/",
        ".",
    ):
        message = refused(lambda url=url: fetcher.fetch(url, FIELD), 400)
        assert "CACHE_DIR" in message or "LABEL_STUDIO_URL" in message, message


def test_absolute_path_with_label_studio_is_not_read_from_disk(make_server, cache_dir):
    """With Label Studio configured, an absolute path outside CACHE_DIR is a Label Studio path:
    never read from the local disk, and not requested either unless it is one of Label Studio's
    file paths."""
    ls = make_server()
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, KEY))
    message = refused(lambda: fetcher.fetch("/etc/passwd", FIELD), 400)
    assert "/etc/passwd" in message and "file paths" in message
    assert ls.connections == 0


@pytest.mark.parametrize("url", ["", "   ", None, 42, ["a.png"]])
def test_not_a_url(cache_dir, url):
    refused(lambda: ImageFetcher(cache_dir).fetch(url, FIELD), 400)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/image.png",
        "//127.0.0.1/image.png",
        "file://127.0.0.1/etc/passwd",
        "gopher://127.0.0.1:70/x",
        "javascript:alert(1)",
    ],
)
def test_unsupported_scheme(cache_dir, url):
    message = refused(lambda: ImageFetcher(cache_dir, image_hosts=("*",)).fetch(url, FIELD), 400)
    assert "scheme" in message


def test_label_studio_path_without_label_studio_url(cache_dir):
    message = refused(lambda: ImageFetcher(cache_dir).fetch("/data/upload/1/image.png", FIELD), 400)
    assert "LABEL_STUDIO_URL" in message


# ---------------------------------------------------------------- Label Studio, legacy token


def test_label_studio_relative_path_with_legacy_token(make_server, cache_dir):
    ls = make_server()
    ls.routes["/data/upload/1/image.png"] = requires_token(PNG)
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, KEY))

    local = fetcher.fetch("/data/upload/1/image.png", FIELD)

    assert local.digest == sha1(PNG)
    assert local.path.read_bytes() == PNG
    assert local.path.parent == cache_dir / "downloads"
    assert local.path.suffix == ".png"
    assert ls.gets("/data/upload/1/image.png")[0]["headers"]["Authorization"] == f"Token {KEY}"
    assert not [r for r in ls.requests if r["path"].startswith("/api/token")]
    # the absolute URL on Label Studio's host is authenticated as well, and is the same file
    absolute = fetcher.fetch(ls.url + "/data/upload/1/image.png", FIELD)
    assert absolute.digest == sha1(PNG)
    assert absolute.path == local.path
    assert [r["headers"].get("Authorization") for r in ls.requests] == [f"Token {KEY}"], (
        "a Label Studio upload never changes: its cached copy is not fetched again"
    )


def test_only_label_studio_uploads_skip_revalidation(make_server, cache_dir):
    ls = make_server()
    ls.routes["/data/upload/1/image.png"] = requires_token(PNG)
    ls.routes["/data/local-files/image.png"] = requires_token(PNG)
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, KEY))
    for _ in range(3):
        fetcher.fetch("/data/upload/1/image.png", FIELD)
        fetcher.fetch("/data/local-files/image.png", FIELD)
    assert len(ls.gets("/data/upload/1/image.png")) == 1
    assert len(ls.gets("/data/local-files/image.png")) == 3, "without validators other paths are fetched again"


def test_label_studio_wrong_token_is_422_with_status(make_server, cache_dir):
    ls = make_server()
    ls.routes["/data/upload/1/image.png"] = requires_token(PNG)
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, "wrong-key"))
    message = refused(lambda: fetcher.fetch("/data/upload/1/image.png", FIELD), 422)
    assert "401" in message
    assert downloads(cache_dir) == []


def test_label_studio_under_a_path_prefix(make_server, cache_dir):
    ls = make_server()
    ls.routes["/ls/data/upload/2/x.jpg"] = requires_token(PNG)
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url + "/ls/", KEY))
    assert fetcher.fetch("/data/upload/2/x.jpg", FIELD).digest == sha1(PNG)


def test_label_studio_presign_redirect_does_not_leak_the_token(make_server, cache_dir):
    """Cloud-storage tasks point at /tasks/<id>/presign/?fileuri=...: Label Studio answers with a
    redirect to the object store, which must be followed without sending Label Studio's key."""
    ls, store = make_server(), make_server()
    store.routes["/bucket/object.png"] = static(PNG)
    path = "/tasks/7/presign/?fileuri=czM6Ly9idWNrZXQvb2JqZWN0LnBuZw%3D%3D"

    def presign(request):
        if request["headers"].get("Authorization") != f"Token {KEY}":
            return 401, {}, b""
        return 303, {"Location": store.url + "/bucket/object.png"}, b""

    ls.routes[path] = presign
    local = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, KEY), image_hosts=(store.netloc,)).fetch(path, FIELD)
    assert local.digest == sha1(PNG)
    assert ls.requests[0]["path"] == path  # the query string reaches Label Studio
    assert "Authorization" not in store.requests[0]["headers"]


def test_label_studio_unreachable_is_a_request_error(cache_dir):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(f"http://127.0.0.1:{port}", KEY), timeout=2)
    message = refused(lambda: fetcher.fetch("/data/upload/1/image.png", FIELD), 422)
    assert "connection failed" in message


# ---------------------------------------------------------------- Label Studio, personal access token


def unsigned_jwt(claims: dict) -> str:
    def part(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.signature"


PAT = unsigned_jwt({"token_type": "refresh", "exp": int(time.time()) + 86400, "jti": "pat-1", "user_id": 1})


class TokenStandIn:
    """Stand-in for Label Studio's /api/token/refresh/ (simplejwt's TokenRefreshView): a valid
    refresh token gets a fresh access token; /data/upload/... accepts only the newest one."""

    def __init__(self, server: Server, access_lifetime: float = 300):
        self.server = server
        self.access_lifetime = access_lifetime
        self.issued = []
        self.revoked = set()
        server.routes["/api/token/refresh/"] = self.refresh

    def refresh(self, request):
        try:
            refresh = json.loads(request["body"])["refresh"]
        except (ValueError, KeyError):
            return 400, {}, b'{"refresh": ["This field is required."]}'
        if refresh != PAT:
            return 401, {"Content-Type": "application/json"}, b'{"detail": "Token is invalid or expired"}'
        access = unsigned_jwt(
            {
                "token_type": "access",
                "exp": int(time.time() + self.access_lifetime),
                "jti": f"access-{len(self.issued)}",
            }
        )
        self.issued.append(access)
        return 200, {"Content-Type": "application/json"}, json.dumps({"access": access}).encode()

    def protect(self, body):
        def handle(request):
            header = request["headers"].get("Authorization", "")
            if not self.issued or header != f"Bearer {self.issued[-1]}" or self.issued[-1] in self.revoked:
                return 401, {}, b'{"detail": "Given token not valid for any token type"}'
            return 200, {}, body

        return handle

    @property
    def refreshes(self):
        return len([r for r in self.server.requests if r["path"] == "/api/token/refresh/"])


def test_personal_access_token_uses_bearer_and_refreshes_on_401(make_server, cache_dir):
    ls = make_server()
    tokens = TokenStandIn(ls)
    ls.routes["/data/local-files/1/a.png"] = tokens.protect(PNG)
    ls.routes["/data/local-files/1/b.png"] = tokens.protect(PNG + b"b")
    auth = LabelStudioAuth(ls.url, PAT)
    assert auth.is_personal_access_token
    fetcher = ImageFetcher(cache_dir, auth)

    assert fetcher.fetch("/data/local-files/1/a.png", FIELD).digest == sha1(PNG)
    assert tokens.refreshes == 1
    first = ls.gets("/data/local-files/1/a.png")[0]["headers"]["Authorization"]
    assert first == f"Bearer {tokens.issued[0]}"
    assert PAT not in first  # the refresh token itself is never sent as a credential

    assert fetcher.fetch("/data/local-files/1/b.png", FIELD).digest == sha1(PNG + b"b")
    assert tokens.refreshes == 1  # the access token is reused while it is valid

    tokens.revoked.add(tokens.issued[-1])  # Label Studio stops accepting it: 401, renew, retry
    assert fetcher.fetch("/data/local-files/1/a.png", FIELD).digest == sha1(PNG)
    assert tokens.refreshes == 2
    assert [r["headers"]["Authorization"] for r in ls.gets("/data/local-files/1/a.png")] == [
        f"Bearer {tokens.issued[0]}",
        f"Bearer {tokens.issued[0]}",
        f"Bearer {tokens.issued[1]}",
    ]
    assert not [r for r in ls.requests if r["headers"].get("Authorization", "").startswith("Token")]


def test_personal_access_token_renewed_before_expiry(make_server, cache_dir):
    ls = make_server()
    tokens = TokenStandIn(ls, access_lifetime=5)  # closer to expiry than the 10 s margin
    ls.routes["/data/local-files/1/a.png"] = tokens.protect(PNG)
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, PAT))
    fetcher.fetch("/data/local-files/1/a.png", FIELD)
    fetcher.fetch("/data/local-files/1/a.png", FIELD)
    assert tokens.refreshes == 2
    assert len(ls.gets("/data/local-files/1/a.png")) == 2  # no request went out with a stale token


def test_personal_access_token_refused_by_label_studio(make_server, cache_dir):
    ls = make_server()
    TokenStandIn(ls)
    other = unsigned_jwt({"token_type": "refresh", "jti": "revoked"})
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, other))
    with pytest.raises(RequestError) as caught:
        fetcher.fetch("/data/local-files/1/a.png", FIELD)
    assert caught.value.field == "LABEL_STUDIO_API_KEY"
    assert caught.value.status == 502 and "401" in str(caught.value)
    assert not ls.gets("/data/local-files/1/a.png")


def test_personal_access_token_with_label_studio_unreachable(cache_dir):
    """Label Studio down while a personal access token must be exchanged: the failure must be a
    RequestError (a 4xx/5xx answer naming what failed), like the same outage with a legacy token."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(f"http://127.0.0.1:{port}", PAT, timeout=2), timeout=2)
    with pytest.raises(RequestError) as caught:
        fetcher.fetch("/data/upload/1/a.png", FIELD)
    assert caught.value.status in (422, 502)


def test_legacy_key_that_looks_like_a_jwt_but_is_not_a_refresh_token(make_server, cache_dir):
    ls = make_server()
    key = unsigned_jwt({"token_type": "access"})
    ls.routes["/data/upload/1/a.png"] = requires_token(PNG, key=key)
    auth = LabelStudioAuth(ls.url, key)
    assert not auth.is_personal_access_token
    assert ImageFetcher(cache_dir, auth).fetch("/data/upload/1/a.png", FIELD).digest == sha1(PNG)


# ---------------------------------------------------------------- IMAGE_HOSTS


def test_image_hosts(make_server, cache_dir):
    ls, images = make_server(), make_server()
    images.routes["/pics/a.png"] = static(PNG)
    url = images.url + "/pics/a.png"

    message = refused(lambda: ImageFetcher(cache_dir, LabelStudioAuth(ls.url, KEY)).fetch(url, FIELD), 400)
    assert images.netloc in message and "IMAGE_HOSTS" in message
    message = refused(lambda: ImageFetcher(cache_dir, image_hosts=(f"127.0.0.1:{ls.port}",)).fetch(url, FIELD), 400)
    assert images.netloc in message
    refused(lambda: ImageFetcher(cache_dir, image_hosts=("localhost",)).fetch(url, FIELD), 400)
    assert images.requests == []  # nothing was requested from a refused host

    for hosts in ((images.netloc,), ("127.0.0.1",), ("*",), ("example.org", images.netloc)):
        fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, KEY), image_hosts=hosts, block_private=False)
        assert fetcher.fetch(url, FIELD).digest == sha1(PNG), hosts
    assert len(images.requests) == 4
    # Label Studio's key is for Label Studio only
    assert all("Authorization" not in r["headers"] for r in images.requests)


def test_image_host_case_insensitive(make_server, cache_dir):
    images = make_server()
    images.routes["/a.png"] = static(PNG)
    fetcher = ImageFetcher(cache_dir, image_hosts=(f"localhost:{images.port}",))
    assert fetcher.fetch(f"http://LocalHost:{images.port}/a.png", FIELD).digest == sha1(PNG)


# ---------------------------------------------------------------- revalidation


def test_changed_content_without_validators_gives_new_digest(make_server, cache_dir):
    server = make_server()
    server.routes["/img.png"] = static(PNG)
    fetcher = ImageFetcher(cache_dir, image_hosts=LOOPBACK)
    first = fetcher.fetch(server.url + "/img.png", FIELD)
    server.routes["/img.png"] = static(PNG + b"v2")
    second = fetcher.fetch(server.url + "/img.png", FIELD)
    assert first.digest == sha1(PNG) and second.digest == sha1(PNG + b"v2")
    assert second.path.read_bytes() == PNG + b"v2"
    assert first.path.read_bytes() == PNG, "a file handed to a request never changes under it"
    assert len(server.gets("/img.png")) == 2
    # another fetcher on the same CACHE_DIR (another worker) sees the same
    assert ImageFetcher(cache_dir, image_hosts=LOOPBACK).fetch(server.url + "/img.png", FIELD).digest == second.digest


class Versioned:
    """A resource with ETag and Last-Modified that answers 304 to matching conditional GETs."""

    def __init__(self, body, etag, use_etag=True):
        self.body, self.etag, self.use_etag = body, etag, use_etag
        self.modified = "Wed, 21 Oct 2015 07:28:00 GMT"
        self.bodies_sent = 0

    def __call__(self, request):
        headers = request["headers"]
        if self.use_etag:
            if headers.get("If-None-Match") == self.etag:
                return 304, {"ETag": self.etag}, b""
            validators = {"ETag": self.etag}
        else:
            if headers.get("If-Modified-Since") == self.modified:
                return 304, {}, b""
            validators = {"Last-Modified": self.modified}
        self.bodies_sent += 1
        return 200, validators, self.body


@pytest.mark.parametrize("use_etag", [True, False], ids=["etag", "last-modified"])
def test_revalidation_304_keeps_cached_file(make_server, cache_dir, use_etag):
    server = make_server()
    resource = Versioned(PNG, '"v1"', use_etag)
    server.routes["/img.png"] = resource
    fetcher = ImageFetcher(cache_dir, image_hosts=LOOPBACK)
    url = server.url + "/img.png"

    first = fetcher.fetch(url, FIELD)
    stat = first.path.stat()
    second = fetcher.fetch(url, FIELD)
    assert (second.path, second.digest) == (first.path, first.digest) == (first.path, sha1(PNG))
    assert second.path.stat().st_ino == stat.st_ino, "the cached file was not written again"
    requests_made = server.gets("/img.png")
    assert len(requests_made) == 2 and resource.bodies_sent == 1
    conditional = requests_made[1]["headers"]
    if use_etag:
        assert conditional["If-None-Match"] == '"v1"'
    else:
        assert conditional["If-Modified-Since"] == resource.modified

    resource.body, resource.etag, resource.modified = PNG + b"v2", '"v2"', "Thu, 22 Oct 2015 07:28:00 GMT"
    third = fetcher.fetch(url, FIELD)
    assert third.digest == sha1(PNG + b"v2") and third.path.read_bytes() == PNG + b"v2"
    assert resource.bodies_sent == 2


def test_revalidation_when_cached_file_was_deleted(make_server, cache_dir):
    server = make_server()
    server.routes["/img.png"] = Versioned(PNG, '"v1"')
    fetcher = ImageFetcher(cache_dir, image_hosts=LOOPBACK)
    first = fetcher.fetch(server.url + "/img.png", FIELD)
    first.path.unlink()
    again = fetcher.fetch(server.url + "/img.png", FIELD)
    assert again.path.read_bytes() == PNG and again.digest == first.digest
    assert "If-None-Match" not in server.gets("/img.png")[1]["headers"]


# ---------------------------------------------------------------- HTTP errors and limits


@pytest.mark.parametrize("status", [404, 403, 500])
def test_http_error_is_422_naming_status(make_server, cache_dir, status):
    server = make_server()
    server.routes["/img.png"] = static(b"nope", status=status)
    message = refused(lambda: ImageFetcher(cache_dir, image_hosts=LOOPBACK).fetch(server.url + "/img.png", FIELD), 422)
    assert f"HTTP {status}" in message
    assert downloads(cache_dir) == []


def test_server_timeout_is_422(make_server, cache_dir):
    server = make_server()

    def slow(request):
        time.sleep(1.5)
        return 200, {}, PNG

    server.routes["/slow.png"] = slow
    fetcher = ImageFetcher(cache_dir, image_hosts=LOOPBACK, timeout=0.3)
    message = refused(lambda: fetcher.fetch(server.url + "/slow.png", FIELD), 422)
    assert "timed out" in message


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "until-close"])
def test_body_larger_than_max_bytes(make_server, cache_dir, with_length):
    server = make_server()
    big = os.urandom(3 * (1 << 20) + 17)
    headers = {} if with_length else {"X-No-Length": "1"}
    server.routes["/big.png"] = static(big, headers)
    server.routes["/fits.png"] = static(big[:4096])
    fetcher = ImageFetcher(cache_dir, image_hosts=LOOPBACK, max_bytes=4096)

    message = refused(lambda: fetcher.fetch(server.url + "/big.png", FIELD), 413)
    assert "4096" in message
    assert downloads(cache_dir) == []  # no partial file, no temp file, no metadata
    assert fetcher.fetch(server.url + "/fits.png", FIELD).digest == sha1(big[:4096])  # exactly the limit
    assert len([n for n in downloads(cache_dir) if not n.endswith(".json")]) == 1


def test_downloads_are_atomic_under_concurrency(make_server, cache_dir):
    """Several workers fetching the same URL at once each get a complete file and digest."""
    server = make_server()
    body = os.urandom(2 * (1 << 20))
    server.routes["/img.png"] = static(body)
    fetcher = ImageFetcher(cache_dir, image_hosts=LOOPBACK)
    results, errors = [], []

    def worker():
        try:
            local = fetcher.fetch(server.url + "/img.png", FIELD)
            results.append((local.digest, sha1(local.path.read_bytes())))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == []
    assert results == [(sha1(body), sha1(body))] * 6
    assert not [n for n in downloads(cache_dir) if n.startswith(".")]


# ---------------------------------------------------------------- issue 11: the key never leaves Label Studio's host


def capture_all(server: Server) -> Server:
    """An attacker's host: answers everything, so any request that reaches it is visible."""
    server.fallback = static(PNG)
    return server


@pytest.mark.parametrize("key", [KEY, PAT], ids=["legacy-token", "personal-access-token"])
def test_finding_1_an_absolute_url_behind_a_slash_is_not_joined_onto_label_studio(make_server, cache_dir, key):
    """ "/http://HOST/steal.png" was joined by urljoin into http://HOST/steal.png, with the key."""
    ls, capture = make_server(), capture_all(make_server())
    TokenStandIn(ls)
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, key), image_hosts=(capture.netloc,))
    for value in (
        f"/{capture.url}/steal.png",
        f"/{capture.netloc}/steal.png",
        f"//{capture.netloc}/steal.png",
        f"/data/upload/x/..//{capture.netloc}/steal.png",
    ):
        refused(lambda value=value: fetcher.fetch(value, FIELD), 400)
    assert capture.connections == 0 and ls.requests == []


@pytest.mark.parametrize("key", [KEY, PAT], ids=["legacy-token", "personal-access-token"])
def test_finding_2_a_backslash_cannot_split_the_host_check_from_the_request(make_server, cache_dir, key):
    """urlsplit saw Label Studio's (or an allowed) host in http://ATTACKER\\@host/, urllib3 connected to ATTACKER."""
    ls, capture = make_server(), capture_all(make_server())
    TokenStandIn(ls)
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, key), image_hosts=("allowed.example",))
    for value in (
        f"http://{capture.netloc}\\@{ls.netloc}/data/upload/1/x.png",
        f"http://{capture.netloc}\\@allowed.example/x.png",
        f"http://{capture.netloc}%5C@{ls.netloc}/data/upload/1/x.png",
        f"http://allowed.example@{capture.netloc}/x.png",
        f"http://user:pw@{ls.netloc}/data/upload/1/x.png",
        f"{ls.url}/data/upload/1/x.png\\..\\..\\api\\projects",
    ):
        message = refused(lambda value=value: fetcher.fetch(value, FIELD), 400)
        assert value[:20] in message or "is not" in message, message
    assert capture.connections == 0 and ls.requests == []


def test_finding_12_label_studio_paths_stay_under_its_file_paths(make_server, cache_dir):
    """/data/upload/../../api/projects/ was normalised into an authenticated GET /api/projects/."""
    ls = make_server()
    ls.fallback = requires_token(b'[{"id": 1, "title": "secret project"}]')
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, KEY))
    for value in (
        "/data/upload/../../api/projects/",
        "/data/upload/%2e%2e/%2E%2E/api/projects/",
        "/data/upload/..%2f..%2fapi/projects/",
        "/data/local-files/../../api/projects/",
        "/api/projects/",
        "/api/projects/1/export?exportType=JSON",
        "/tasks/1/presign/../../api/users/",
        "/tasks/1/annotations/",
        "/data/upload/",
        "/storage-data/../api/projects/",
        f"{ls.url}/api/projects/",
        f"{ls.url}/data/upload/%2e%2e/%2e%2e/api/projects/",
    ):
        message = refused(lambda value=value: fetcher.fetch(value, FIELD), 400)
        assert "Label Studio" in message, message
    assert ls.requests == []


def test_the_findings_sent_to_predict_are_a_400_and_reach_no_host(make_server, tmp_path):
    """Findings 1, 2 and 12 as a task's image in a /predict body, through the app: each a 400
    naming tasks[0].data.image; neither the attacker's host nor Label Studio gets a request."""
    ls, capture = make_server(), capture_all(make_server())
    ls.fallback = requires_token(b'[{"id": 1, "title": "secret project"}]')
    client, _ = make_backend(
        tmp_path, label_studio_url=ls.url, label_studio_api_key=KEY, image_hosts=("allowed.example",)
    )
    for image in (
        f"/{capture.url}/steal.png",
        f"http://{capture.netloc}\\@{ls.netloc}/data/upload/1/x.png",
        f"http://{capture.netloc}\\@allowed.example/x.png",
        "/data/upload/../../api/projects/",
    ):
        answer = client.post("/predict", json=predict_body(image=image))
        error = answer.get_json()["error"]
        assert answer.status_code == 400 and error.startswith("tasks[0].data.image"), (image, error)
        assert KEY not in error
    assert capture.connections == 0 and ls.requests == []
    assert client.get("/health").status_code == 200


def test_label_studio_file_paths_are_requested_as_given(make_server, cache_dir):
    """Uploads, local files, uploads in cloud storage and presign: with the key, query intact."""
    ls = make_server()
    paths = [
        "/data/upload/3/5f1e-my image ü.png",
        "/data/local-files/?d=images/sub%20dir/photo%20%C3%BC.png",
        "/storage-data/uploaded/?filepath=upload/3/5f1e-scan.png",
        "/tasks/9/resolve/?fileuri=czM6Ly9iL2sucG5n",
    ]
    for number, path in enumerate(paths):
        ls.routes[path.replace(" ", "%20").replace("ü", "%C3%BC")] = requires_token(PNG + bytes([number]))
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, KEY))
    for number, path in enumerate(paths):
        local = fetcher.fetch(path, FIELD)
        assert local.digest == sha1(PNG + bytes([number])), path
        assert local.path.suffix == (".png" if "fileuri" not in path else "")
    assert [r["path"] for r in ls.requests] == [
        "/data/upload/3/5f1e-my%20image%20%C3%BC.png",
        "/data/local-files/?d=images/sub%20dir/photo%20%C3%BC.png",
        "/storage-data/uploaded/?filepath=upload/3/5f1e-scan.png",
        "/tasks/9/resolve/?fileuri=czM6Ly9iL2sucG5n",
    ]
    assert all(r["headers"]["Authorization"] == f"Token {KEY}" for r in ls.requests)


# ---------------------------------------------------------------- issue 8: cloud storage URIs through presign


class PresignStandIn:
    """Label Studio's /tasks/<id>/presign/ (TaskResolveStorageUri): with the key, a 303 to a
    freshly signed object-store URL; the store accepts only the latest signature of a key."""

    def __init__(self, ls: Server, store: Server, key: str = KEY):
        self.ls, self.store, self.key = ls, store, key
        self.objects: dict[str, bytes] = {}
        self.signatures: dict[str, int] = {}
        self.asked: list[tuple[int, str]] = []
        self.accepts = lambda authorization: authorization == f"Token {key}"  # what Label Studio lets in
        ls.fallback = self.presign
        store.fallback = self.serve

    def presign(self, request):
        parts = urlsplit(request["path"])
        segments = parts.path.strip("/").split("/")
        if len(segments) != 3 or segments[0] != "tasks" or segments[2] not in ("presign", "resolve"):
            return 404, {}, b""
        if not self.accepts(request["headers"].get("Authorization", "")):
            return 401, {}, b""
        uri = base64.urlsafe_b64decode(parse_qs(parts.query)["fileuri"][0]).decode()
        self.asked.append((int(segments[1]), uri))
        scheme, _, rest = uri.partition("://")
        if uri not in self.objects:
            return 404, {}, b""
        self.signatures[uri] = self.signatures.get(uri, 0) + 1
        location = f"{self.store.url}/{scheme}/{quote(rest)}?X-Amz-Signature=sig{self.signatures[uri]}"
        return 303, {"Location": location, "Cache-Control": "no-store, max-age=60"}, b""

    def serve(self, request):
        parts = urlsplit(request["path"])
        scheme, _, rest = parts.path.lstrip("/").partition("/")
        from urllib.parse import unquote

        uri = f"{scheme}://{unquote(rest)}"
        if uri not in self.objects or parse_qs(parts.query).get("X-Amz-Signature") != [f"sig{self.signatures[uri]}"]:
            return 403, {}, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
        return 200, {"ETag": f'"{sha1(self.objects[uri])}"'}, self.objects[uri]


@pytest.mark.parametrize(
    "uri",
    ["s3://bucket/images/cat.png", "gs://bucket/a folder/ü ñ 猫.png", "azure-blob://container/deep/path/scan 01.png"],
)
def test_cloud_storage_uri_through_presign_without_the_key_at_the_store(make_server, cache_dir, uri):
    ls, store = make_server(), make_server()
    presign = PresignStandIn(ls, store)
    presign.objects[uri] = PNG + uri.encode()
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, KEY), image_hosts=(store.netloc,))

    local = fetcher.fetch(uri, FIELD, task_id=42)
    assert local.digest == sha1(PNG + uri.encode()) and local.path.read_bytes() == PNG + uri.encode()
    assert local.path.suffix == ".png"
    assert presign.asked == [(42, uri)]
    assert all("Authorization" not in r["headers"] for r in store.requests)
    assert all(r["headers"]["Authorization"] == f"Token {KEY}" for r in ls.requests)

    # the first presigned URL has expired (the store refuses it): Label Studio is simply asked again,
    # and the store's ETag makes the second download a 304 on the cached file
    again = fetcher.fetch(uri, FIELD, task_id="42")
    assert again.path == local.path and presign.asked == [(42, uri)] * 2
    assert store.requests[-1]["headers"].get("If-None-Match") == f'"{sha1(PNG + uri.encode())}"'


def test_cloud_storage_uri_through_presign_with_a_personal_access_token(make_server, cache_dir):
    """With a personal access token, presign is asked with the Bearer access token it was
    exchanged for; the object store gets neither that nor the token itself."""
    ls, store = make_server(), make_server()
    tokens = TokenStandIn(ls)
    presign = PresignStandIn(ls, store)
    presign.accepts = lambda authorization: bool(tokens.issued) and authorization == f"Bearer {tokens.issued[-1]}"
    uri = "s3://bucket/scans/ü 01.png"
    presign.objects[uri] = PNG + b"pat"
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, PAT), image_hosts=(store.netloc,))
    local = fetcher.fetch(uri, FIELD, task_id=7)
    assert local.path.read_bytes() == PNG + b"pat" and presign.asked == [(7, uri)]
    assert len(tokens.issued) == 1
    for request in store.requests:
        assert "Authorization" not in request["headers"]
        assert PAT not in repr(request) and tokens.issued[0] not in repr(request)


def test_cloud_storage_uri_needs_a_task_id_and_label_studio(make_server, cache_dir):
    ls = make_server()
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, KEY))
    for task_id in (None, "", "abc", -1, 0, True, 1.5, [3]):
        message = refused(lambda task_id=task_id: fetcher.fetch("s3://bucket/a.png", FIELD, task_id=task_id), 400)
        assert "task has no id" in message
    message = refused(lambda: ImageFetcher(cache_dir).fetch("gs://bucket/a.png", FIELD, task_id=3), 400)
    assert "LABEL_STUDIO_URL is not set" in message
    assert ls.requests == []


def test_cloud_storage_uri_unknown_to_label_studio_is_422(make_server, cache_dir):
    ls, store = make_server(), make_server()
    PresignStandIn(ls, store)
    message = refused(
        lambda: ImageFetcher(cache_dir, LabelStudioAuth(ls.url, KEY)).fetch("s3://nowhere/a.png", FIELD, task_id=1), 422
    )
    assert "HTTP 404" in message and "s3://nowhere/a.png" in message


def test_pipeline_passes_the_task_id_to_the_fetcher(make_server, tmp_path):
    """Pipeline.run resolves a cloud task through /tasks/<the task's id>/presign/."""
    import cv2
    import numpy as np

    from sam2plus.framestore import FrameStore
    from sam2plus.params import ExtraParams
    from sam2plus.pipeline import Pipeline
    from tests.support.geometry_segmenter import ColorRegionSegmenter
    from tests.support.scenes import DiscScene, label_config, rect_context

    scene = DiscScene(320, 240, 160, 120, 50)
    jpeg = scene.write(tmp_path / "scene.jpg").read_bytes()
    ls, store = make_server(), make_server()
    presign = PresignStandIn(ls, store)
    presign.objects["s3://bucket/scene.jpg"] = jpeg
    fetcher = ImageFetcher(tmp_path / "cache", LabelStudioAuth(ls.url, KEY), image_hosts=(store.netloc,))
    pipeline = Pipeline(
        ColorRegionSegmenter(), fetcher, FrameStore(tmp_path / "frames", 1 << 26), 10**8, tmp_path / "cache"
    )
    task = {"id": 17, "data": {"image": "s3://bucket/scene.jpg"}}
    prediction = pipeline.run(task, rect_context(scene.box(), 320, 240), label_config(), ExtraParams())
    assert presign.asked == [(17, "s3://bucket/scene.jpg")]
    assert prediction.regions and prediction.frame_map.image_size == (320, 240)
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)


# ---------------------------------------------------------------- one deadline per download


def until(condition, seconds: float) -> bool:
    """Wait up to `seconds` for `condition()`; whether it came true."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("path", ["/drip.png", "/drip-headers.png", "/chunked.png"])
def test_a_dripping_host_times_out_at_the_deadline(cache_dir, path):
    """Issue 21: a host that sends a byte every half second never trips a read timeout; the whole
    download (headers, chunk-size lines and body alike) ends at FETCH_TIMEOUT with a 422, and the
    host sees its connection closed."""
    with dripping_server(interval=0.5) as drip:
        fetcher = ImageFetcher(cache_dir, image_hosts=(drip.host,), timeout=1.5)
        started = time.monotonic()
        message = refused(lambda: fetcher.fetch(f"http://{drip.host}{path}", FIELD), 422)
        elapsed = time.monotonic() - started
        assert "timed out" in message and "FETCH_TIMEOUT" in message
        assert 1.4 < elapsed < 1.5 + 2, f"{elapsed:.1f} s"
        assert until(lambda: drip.drips[0].closed is not None, 3), "the host saw its connection closed"
    assert downloads(cache_dir) == [], "nothing partial is kept"


def test_redirect_hops_share_one_deadline(cache_dir):
    """Each hop answers within the per-read timeout, but the chain does not: it stops at FETCH_TIMEOUT."""
    with dripping_server(interval=0.5, hop_delay=0.6) as drip:
        fetcher = ImageFetcher(cache_dir, image_hosts=(drip.host,), timeout=1.5)
        started = time.monotonic()
        message = refused(lambda: fetcher.fetch(f"http://{drip.host}/hop/5.png", FIELD), 422)
        elapsed = time.monotonic() - started
    assert "timed out" in message and "/hop/5.png" in message
    assert elapsed < 1.5 + 2, f"{elapsed:.1f} s"
    assert [d.path for d in drip.drips] == ["/hop/5.png", "/hop/4.png", "/hop/3.png"], "the third hop ran out of time"


def test_a_download_stops_when_should_stop_turns_true(cache_dir):
    """A click whose client has gone: the download stops within a tick of `should_stop()` turning
    true (asked on the watchdog's thread, in a copy of the caller's context), as `Stopped`."""
    caller = contextvars.ContextVar("caller", default="another thread")
    caller.set("the click's thread")
    gone = threading.Event()
    seen = []

    def should_stop():
        seen.append(caller.get())
        return gone.is_set()

    with dripping_server(interval=2.0) as drip:
        fetcher = ImageFetcher(cache_dir, image_hosts=(drip.host,), timeout=60)
        threading.Timer(1.0, gone.set).start()
        started = time.monotonic()
        with pytest.raises(Stopped, match="the client went away"):
            fetcher.fetch(f"http://{drip.host}/drip.png", FIELD, should_stop=should_stop)
        elapsed = time.monotonic() - started
        assert elapsed < 1.0 + 1.5, f"{elapsed:.1f} s"
        assert until(lambda: drip.drips[0].closed is not None, 3)
    assert set(seen) == {"the click's thread"}, "should_stop ran in the caller's context"


def test_a_failing_should_stop_leaves_the_download_to_its_deadline(cache_dir, caplog):
    """A should_stop that raises is logged and dropped: its download still ends at the deadline,
    and the watchdog goes on watching the next one."""

    def broken():
        raise RuntimeError("no request here")

    with dripping_server(interval=0.5) as drip:
        fetcher = ImageFetcher(cache_dir, image_hosts=(drip.host,), timeout=1.0)
        assert "timed out" in refused(
            lambda: fetcher.fetch(f"http://{drip.host}/drip.png", FIELD, should_stop=broken), 422
        )
        assert any("should_stop failed" in record.getMessage() for record in caplog.records)
        with pytest.raises(Stopped):
            fetcher.fetch(f"http://{drip.host}/drip.png", FIELD, should_stop=lambda: True)


def test_the_deadline_leaves_the_connection_pool_usable(make_server, cache_dir):
    """A download cut by the watchdog is closed, not pooled: the next download from the same host
    gets a fresh connection and its image."""
    server = make_server()
    server.routes["/slow.png"] = lambda request: (time.sleep(1.5), (200, {}, PNG))[1]
    server.routes["/a.png"] = static(PNG + b"a")
    fetcher = ImageFetcher(cache_dir, image_hosts=LOOPBACK, timeout=0.8)
    refused(lambda: fetcher.fetch(server.url + "/slow.png", FIELD), 422)
    for _ in range(3):
        assert fetcher.fetch(server.url + "/a.png", FIELD).digest == sha1(PNG + b"a")


# ---------------------------------------------------------------- redirects


def redirect(location, status=302):
    return lambda request: (status, {"Location": location}, b"")


def test_image_host_redirects_only_to_image_hosts(make_server, cache_dir):
    images, other = make_server(), capture_all(make_server())
    images.routes["/ok.png"] = redirect("/real.png")
    images.routes["/real.png"] = static(PNG)
    images.routes["/away.png"] = redirect(f"{other.url}/x.png", 301)
    fetcher = ImageFetcher(cache_dir, image_hosts=(images.netloc,))

    assert fetcher.fetch(images.url + "/ok.png", FIELD).digest == sha1(PNG)  # a relative Location
    message = refused(lambda: fetcher.fetch(images.url + "/away.png", FIELD), 400)
    assert f"{images.url}/away.png" in message and f"127.0.0.1:{other.port}" in message and "IMAGE_HOSTS" in message
    assert other.connections == 0
    both = ImageFetcher(cache_dir, image_hosts=(images.netloc, other.netloc))
    assert both.fetch(images.url + "/away.png", FIELD).digest == sha1(PNG)


def test_label_studio_redirects_follow_anywhere_without_the_key(make_server, cache_dir):
    ls, elsewhere = make_server(), make_server()
    elsewhere.fallback = static(PNG)
    ls.routes["/data/local-files/"] = redirect(f"{elsewhere.url}/object.png?sig=1", 307)
    ls.routes["/data/upload/1/moved.png"] = redirect("/storage-data/uploaded/?filepath=upload/1/moved.png")
    ls.routes["/storage-data/uploaded/"] = requires_token(PNG + b"moved")
    ls.routes["/data/upload/1/sneaky.png"] = redirect("/api/projects/")
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, KEY), image_hosts=(elsewhere.netloc,))

    assert fetcher.fetch("/data/local-files/?d=a.png", FIELD).digest == sha1(PNG)
    assert "Authorization" not in elsewhere.requests[0]["headers"]
    # back onto Label Studio's own file paths: the key goes along
    assert fetcher.fetch("/data/upload/1/moved.png", FIELD).digest == sha1(PNG + b"moved")
    # but not to the rest of its API
    message = refused(lambda: fetcher.fetch("/data/upload/1/sneaky.png", FIELD), 400)
    assert "/api/projects/" in message
    assert not [r for r in ls.requests if r["path"].startswith("/api/")]


@pytest.mark.parametrize("hosts", [("*",), ("*", "127.0.0.1")], ids=["star", "star-and-loopback"])
def test_image_host_redirects_into_label_studios_api_are_refused(make_server, cache_dir, hosts):
    """Issue 21: with IMAGE_HOSTS=*, an allowed host answering 302 to Label Studio's API was
    followed. Every hop passes Label Studio's path rule: its API sees no request at all, and a
    hop onto its file paths from elsewhere goes without the key."""
    ls, images = capture_all(make_server()), make_server()
    images.routes["/api.png"] = redirect(f"{ls.url}/api/projects/")
    images.routes["/dots.png"] = redirect(f"{ls.url}/data/upload/%2e%2e/%2e%2e/api/projects/", 307)
    images.routes["/file.png"] = redirect(f"{ls.url}/data/upload/1/a.png")
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, KEY), image_hosts=hosts, block_private=False)
    for path in ("/api.png", "/dots.png"):
        message = refused(lambda path=path: fetcher.fetch(images.url + path, FIELD), 400)
        assert "redirects to" in message and "Label Studio" in message
    assert ls.requests == [] and ls.connections == 0, "Label Studio saw no request"
    assert fetcher.fetch(images.url + "/file.png", FIELD).digest == sha1(PNG)
    assert [r["path"] for r in ls.requests] == ["/data/upload/1/a.png"]
    assert "Authorization" not in ls.requests[0]["headers"], "the key stays home on a chain begun elsewhere"


def test_redirect_loops_stop_after_a_few_hops(make_server, cache_dir):
    images = make_server()
    images.routes["/loop.png"] = redirect("/loop.png")
    message = refused(lambda: ImageFetcher(cache_dir, image_hosts=LOOPBACK).fetch(images.url + "/loop.png", FIELD), 422)
    assert "redirects" in message
    assert 2 <= len(images.requests) <= 10


@pytest.mark.parametrize(
    "location",
    [
        "http://a\\@127.0.0.1/x",
        "http://127.0.0.1\r\nX-Injected: 1/x",
        "ftp://127.0.0.1/x.png",
        "http://user:pw@127.0.0.1/x.png",
    ],
)
def test_malformed_redirects_are_refused(make_server, cache_dir, location):
    images = make_server()
    images.routes["/x.png"] = lambda request: (302, {"Location": location.replace("\r\n", "%0D%0A")}, b"")
    if "\r\n" in location:  # http.server refuses to send raw CR/LF: smuggle a tab instead
        images.routes["/x.png"] = lambda request: (302, {"Location": "http://127.0.0.1/\tx"}, b"")
    fetcher = ImageFetcher(cache_dir, image_hosts=("*",), block_private=False)
    refused(lambda: fetcher.fetch(images.url + "/x.png", FIELD), 400)
    assert len(images.requests) == 1


# ---------------------------------------------------------------- private addresses


def test_private_addresses_blocked_on_the_resolved_address(make_server, cache_dir):
    """`localhost` is not 127.0.0.1 by name, but resolves to it: refused unless named."""
    images = capture_all(make_server())
    url = f"http://localhost:{images.port}/a.png"
    for hosts in (("*",), ("127.0.0.1:1",)):
        fetcher = ImageFetcher(cache_dir, image_hosts=hosts + ("*",))
        message = refused(lambda fetcher=fetcher: fetcher.fetch(url, FIELD), 400)
        assert "localhost" in message and "not a public address" in message and "IMAGE_HOSTS" in message
    message = refused(lambda: ImageFetcher(cache_dir, image_hosts=("*",)).fetch(images.url + "/a.png", FIELD), 400)
    assert "127.0.0.1" in message
    assert images.connections == 0, "the check comes before connecting"

    for hosts, block in (((f"localhost:{images.port}",), True), (("localhost",), True), (("*",), False)):
        fetcher = ImageFetcher(cache_dir, image_hosts=hosts, block_private=block)
        assert fetcher.fetch(url, FIELD).digest == sha1(PNG), hosts
    assert images.connections >= 3


def test_label_studio_redirect_to_a_private_address_is_refused_unless_named(make_server, cache_dir):
    """Presigned URLs may go anywhere, but not to loopback/private addresses nobody named."""
    ls, store = make_server(), make_server()
    presign = PresignStandIn(ls, store)
    presign.objects["s3://bucket/a.png"] = PNG
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, KEY))  # Label Studio itself is named
    message = refused(lambda: fetcher.fetch("s3://bucket/a.png", FIELD, task_id=1), 400)
    assert "127.0.0.1" in message and "not a public address" in message
    assert store.connections == 0
    # another port of Label Studio's host is not Label Studio
    assert ImageFetcher(cache_dir, LabelStudioAuth(ls.url, KEY), image_hosts=(store.netloc,)).fetch(
        "s3://bucket/a.png", FIELD, task_id=1
    ).digest == sha1(PNG)


def test_public_addresses_are_connected_to(monkeypatch, make_server, cache_dir):
    """The check lets public addresses through: a name made to resolve to a public address
    (here 203.0.113.7, which this machine cannot reach) fails to connect, it is not refused."""
    import socket as sockets

    real = sockets.getaddrinfo

    def fake(host, *args, **kwargs):
        if host == "images.example":
            return [(sockets.AF_INET, sockets.SOCK_STREAM, 6, "", ("8.8.8.8", 80))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(sockets, "getaddrinfo", fake)
    from sam2plus import transport

    connected = []
    monkeypatch.setattr(
        transport,
        "create_connection",
        lambda address, *args, **kwargs: (
            connected.append(address) or (_ for _ in ()).throw(ConnectionRefusedError("not here"))
        ),
    )
    fetcher = ImageFetcher(cache_dir, image_hosts=("*",))
    message = refused(lambda: fetcher.fetch("http://images.example/a.png", FIELD), 422)
    assert "connection failed" in message
    assert connected == [("8.8.8.8", 80)], "it connects to the checked address, not to a new resolution"


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",
        "2002:7f00:1::1",
        "::127.0.0.1",
        "::ffff:169.254.169.254",
        "fec0::1",
        "2001:0:a00:1::f7f7:f7f7",
    ],
)
def test_names_resolving_to_ipv6_forms_of_private_addresses_are_refused(monkeypatch, cache_dir, address):
    """A name resolving to an IPv6 form that carries a private IPv4 address (or to a reserved
    IPv6 range) is refused before any connection, like one resolving to the address itself."""
    import socket as sockets

    real = sockets.getaddrinfo
    monkeypatch.setattr(
        sockets,
        "getaddrinfo",
        lambda host, *args, **kwargs: (
            [(sockets.AF_INET6, sockets.SOCK_STREAM, 6, "", (address, 80, 0, 0))]
            if host == "images.example"
            else real(host, *args, **kwargs)
        ),
    )
    from sam2plus import transport

    connected = []
    monkeypatch.setattr(transport, "create_connection", lambda address, *args, **kwargs: connected.append(address))
    message = refused(
        lambda: ImageFetcher(cache_dir, image_hosts=("*",)).fetch("http://images.example/a.png", FIELD), 400
    )
    assert address in message and "not a public address" in message
    assert connected == []


# ---------------------------------------------------------------- data: URLs


def data_url(body: bytes, media_type="image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(body).decode()}"


def test_data_url_is_stored_by_content(cache_dir):
    fetcher = ImageFetcher(cache_dir)
    local = fetcher.fetch(data_url(PNG), FIELD)
    assert local.digest == sha1(PNG) and local.path.read_bytes() == PNG
    assert local.path.parent == cache_dir / "downloads" and local.path.suffix == ".png"
    wrapped = "data:image/png;base64," + "\n".join(base64.encodebytes(PNG).decode().split())
    again = fetcher.fetch(wrapped, FIELD)
    assert again.path == local.path and again.path.stat().st_ino == local.path.stat().st_ino
    assert fetcher.fetch(data_url(PNG, "image/jpeg"), FIELD).path.suffix in (".jpg", ".jpeg")


@pytest.mark.parametrize(
    "value, status, words",
    [
        ("data:image/png;base64,!!!!", 400, "base64"),
        ("data:image/png;base64,iVBORw0KGgo", 400, "base64"),
        ("data:text/html;base64,PGgxPmhpPC9oMT4=", 400, "data:image"),
        ("data:image/png,rawbytes", 400, "data:image"),
        ("data:image/png;base64", 400, "data:image"),
        ("data:image/png;base64,", 400, "empty"),
    ],
)
def test_bad_data_urls(cache_dir, value, status, words):
    message = refused(lambda: ImageFetcher(cache_dir).fetch(value, FIELD), status)
    assert words in message
    assert downloads(cache_dir) == []


def test_data_url_bounded_by_max_image_bytes(cache_dir):
    fetcher = ImageFetcher(cache_dir, max_bytes=len(PNG))
    assert fetcher.fetch(data_url(PNG), FIELD).digest == sha1(PNG)  # exactly the limit
    message = refused(lambda: fetcher.fetch(data_url(PNG + b"!"), FIELD), 413)
    assert f"MAX_IMAGE_BYTES={len(PNG)}" in message


def test_data_url_image_bounded_by_the_pixel_limit(tmp_path):
    """Through the pipeline: the decoded image's header is checked against MAX_IMAGE_PIXELS."""
    from sam2plus.framestore import FrameStore
    from sam2plus.params import ExtraParams
    from sam2plus.pipeline import Pipeline
    from tests.support.geometry_segmenter import ColorRegionSegmenter
    from tests.support.scenes import DiscScene, label_config, rect_context

    scene = DiscScene(400, 300, 200, 150, 60)
    image = data_url(scene.write(tmp_path / "scene.jpg").read_bytes(), "image/jpeg")
    task = {"id": 1, "data": {"image": image}}

    def run(max_pixels):
        pipeline = Pipeline(
            ColorRegionSegmenter(),
            ImageFetcher(tmp_path / "cache"),
            FrameStore(tmp_path / "frames", 1 << 26),
            max_pixels,
            tmp_path / "cache",
        )
        return pipeline.run(task, rect_context(scene.box(), 400, 300), label_config(), ExtraParams())

    assert run(400 * 300).regions
    with pytest.raises(RequestError) as caught:
        run(400 * 300 - 1)
    assert caught.value.status == 413 and caught.value.field == "tasks[0].data.image"
    assert "MAX_IMAGE_PIXELS" in str(caught.value)


# ---------------------------------------------------------------- the download cache bound


def serve_files(server: Server, count: int, size: int) -> list[bytes]:
    bodies = [bytes([n]) * size for n in range(count)]
    for n, body in enumerate(bodies):
        server.routes[f"/{n}.png"] = static(body)
    return bodies


def content_files(cache_dir: Path) -> list[str]:
    return [name for name in downloads(cache_dir) if name.endswith(".png")]


def test_download_cache_keeps_within_its_bound_least_recently_used_first(make_server, cache_dir):
    server = make_server()
    size = 64 << 10
    bodies = serve_files(server, 5, size)
    bound = 3 * size + 4 * os.statvfs(cache_dir.parent).f_frsize  # three files and four URLs' records (a block each)
    fetcher = ImageFetcher(cache_dir, image_hosts=LOOPBACK, cache_bytes=bound)
    for n in range(3):
        fetcher.fetch(f"{server.url}/{n}.png", FIELD).release()
        time.sleep(0.01)
    fetcher.fetch(f"{server.url}/0.png", FIELD).release()  # 0 is used again: 1 is now the oldest
    fetcher.fetch(f"{server.url}/3.png", FIELD).release()
    assert sorted(content_files(cache_dir)) == sorted(f"{sha1(bodies[n])}.png" for n in (0, 2, 3))
    assert fetcher.downloads.size() <= bound


def test_a_file_in_use_is_never_evicted(make_server, cache_dir):
    server = make_server()
    size = 64 << 10
    bodies = serve_files(server, 4, size)
    fetcher = ImageFetcher(cache_dir, image_hosts=LOOPBACK, cache_bytes=size + 1024)
    with fetcher.fetch(f"{server.url}/0.png", FIELD) as held:
        for n in (1, 2, 3):
            fetcher.fetch(f"{server.url}/{n}.png", FIELD).release()
            assert held.path.read_bytes() == bodies[0], "the file a request holds is still there"
    fetcher.fetch(f"{server.url}/1.png", FIELD).release()
    assert not held.path.exists(), "released, it is evicted like any other"


def hold_download(cache_dir: str, url: str, cache_bytes: int, ready, release, result) -> None:
    """Another worker: fetch `url`, report its path, keep using it until told, then report
    whether it was still whole."""
    fetcher = ImageFetcher(cache_dir, image_hosts=LOOPBACK, cache_bytes=cache_bytes)
    local = fetcher.fetch(url, FIELD)
    ready.put(str(local.path))
    release.wait(60)
    result.put(sha1(local.path.read_bytes()) == local.digest)


def test_eviction_across_two_processes_skips_what_the_other_holds(make_server, cache_dir):
    server = make_server()
    size = 64 << 10
    bodies = serve_files(server, 6, size)
    bound = 2 * size + 4096
    context = multiprocessing.get_context("spawn")
    ready, result, release = context.Queue(), context.Queue(), context.Event()
    other = context.Process(
        target=hold_download, args=(str(cache_dir), f"{server.url}/0.png", bound, ready, release, result)
    )
    other.start()
    try:
        held = Path(ready.get(timeout=60))
        fetcher = ImageFetcher(cache_dir, image_hosts=LOOPBACK, cache_bytes=bound)
        for n in (1, 2, 3, 4):
            fetcher.fetch(f"{server.url}/{n}.png", FIELD).release()
            assert held.exists(), f"evicted while the other process held it (after file {n})"
        release.set()
        assert result.get(timeout=60) is True
    finally:
        release.set()
        other.join(60)
    assert other.exitcode == 0
    fetcher.fetch(f"{server.url}/5.png", FIELD).release()
    assert not held.exists(), "once the other process let go, the oldest file went"
    assert f"{sha1(bodies[5])}.png" in content_files(cache_dir)
    assert fetcher.downloads.size() <= bound


# ---------------------------------------------------------------- issue 25 item 2: downloads, second pass

GZIP_INFLATED = 200 << 20  # what the gzip body below inflates to


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """200 MiB of zeros, gzip-compressed to about 200 KB (the review's inflated to 2000 MiB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    return b"".join(packer.compress(block) for _ in range(GZIP_INFLATED >> 20)) + packer.flush()


def test_a_gzip_coded_download_is_refused_before_a_byte_is_inflated(make_server, cache_dir, gzip_bomb):
    """A host that answers `Content-Encoding: gzip` although the backend asked for identity: a 422
    naming the coding, nothing stored, nothing inflated (before: 1 GiB written, then a 413)."""
    host = make_server()
    host.routes["/bomb.png"] = static(gzip_bomb, {"Content-Encoding": "gzip", "Content-Type": "image/png"})
    host.routes["/plain.png"] = static(PNG, {"Content-Encoding": "identity"})
    fetcher = ImageFetcher(cache_dir, image_hosts=LOOPBACK, max_bytes=1 << 20)
    message = refused(lambda: fetcher.fetch(f"{host.url}/bomb.png", FIELD), 422)
    assert 'Content-Encoding "gzip"' in message and "identity" in message
    assert host.gets("/bomb.png")[0]["headers"]["Accept-Encoding"] == "identity"
    assert downloads(cache_dir) == []
    assert fetcher.fetch(f"{host.url}/plain.png", FIELD).digest == sha1(PNG)


def test_name_resolution_is_inside_the_download_deadline(monkeypatch, cache_dir):
    """A name that takes 8 s to resolve with FETCH_TIMEOUT=2: the download ends at 2 s with the
    deadline's 422 (before: 8 s, name resolution was outside the deadline)."""
    import socket as sockets

    real = sockets.getaddrinfo

    def slow(host, *args, **kwargs):
        if host == "slow.example":
            time.sleep(8)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(sockets, "getaddrinfo", slow)
    for hosts, block_private in ((("slow.example",), False), (("*",), True)):  # named and public-only pools
        fetcher = ImageFetcher(cache_dir, image_hosts=hosts, timeout=2, block_private=block_private)
        started = time.monotonic()
        message = refused(lambda fetcher=fetcher: fetcher.fetch("http://slow.example/a.png", FIELD), 422)
        assert "FETCH_TIMEOUT" in message and time.monotonic() - started < 3.5, time.monotonic() - started


def test_a_stalled_token_refresh_is_inside_the_download_deadline(make_server, cache_dir):
    """Label Studio's /api/token/refresh/ that takes 10 s with FETCH_TIMEOUT=2: the click's download
    ends at 2 s (before: the refresh ran outside the deadline, on its own 10 s read timeout), and a
    second download waiting for the same refresh ends at its own deadline too."""
    ls = make_server()
    tokens = TokenStandIn(ls)
    ls.routes["/data/local-files/1/a.png"] = tokens.protect(PNG)
    ls.routes["/api/token/refresh/"] = lambda request: (time.sleep(10), tokens.refresh(request))[1]
    fetcher = ImageFetcher(cache_dir, LabelStudioAuth(ls.url, PAT, timeout=10), timeout=2)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = [pool.submit(refused, lambda: fetcher.fetch("/data/local-files/1/a.png", FIELD), 422) for _ in "ab"]
        messages = [result.result() for result in results]
    assert time.monotonic() - started < 3.5, f"{time.monotonic() - started:.1f} s"
    assert all("FETCH_TIMEOUT" in message for message in messages), messages
    assert not ls.gets("/data/local-files/1/a.png")


def test_task_values_cannot_tell_cache_files_from_missing_names(tmp_path):
    """A task value naming a file under CACHE_DIR that is not an image (a download's record, the
    cache's own files) is answered exactly as a name that is not there (before: 422 against 400)."""
    client, cache = make_backend(tmp_path)
    (cache / "downloads").mkdir(exist_ok=True)
    (cache / "downloads" / "record.json").write_text("{}")
    answers = {}
    for name in ("downloads/record.json", "downloads/missing.json"):
        answer = client.post("/predict", json=predict_body(image=name))
        answers[name] = (answer.status_code, answer.get_json()["error"].replace(name, "NAME"))
    assert answers["downloads/record.json"] == answers["downloads/missing.json"]
    assert (
        answers["downloads/record.json"][0] == 400
        and "is not a file inside CACHE_DIR" in answers["downloads/record.json"][1]
    )


def _click(url: str, image: str) -> tuple[int, str, float]:
    started = time.monotonic()
    answer = requests.post(f"{url}/predict", json=predict_body(image=image), timeout=120)
    return answer.status_code, answer.json().get("error", ""), time.monotonic() - started


@pytest.mark.slow
def test_downloads_under_gunicorn_refuse_gzip_keep_the_refresh_in_the_deadline_and_hide_cache_names(
    make_server, tmp_path, gzip_bomb
):
    """The review's cases against a real gunicorn (FETCH_TIMEOUT=2): a gzip-coded download is a 422
    naming the coding with nothing written; a Label Studio whose token refresh drips a byte every
    half second (never tripping a read timeout) costs a click 2 s (before: the refresh was outside
    the deadline); a task value naming a cache file that is no image is answered as a missing name."""
    images = make_server()
    images.routes["/bomb.png"] = static(gzip_bomb, {"Content-Encoding": "gzip", "Content-Type": "image/png"})
    cache = tmp_path / "cache"
    with contextlib.ExitStack() as stack:
        ls = stack.enter_context(dripping_server(interval=0.5))
        env = {
            "CACHE_DIR": str(cache),
            "MODEL_DIR": str(tmp_path / "models"),
            "IMAGE_HOSTS": "127.0.0.1",
            "LABEL_STUDIO_URL": f"http://{ls.host}",
            "LABEL_STUDIO_API_KEY": PAT,
            "FETCH_TIMEOUT": "2",
        }
        server = stack.enter_context(gunicorn_server(env, workers=1, threads=4, log_dir=tmp_path))
        status, error, seconds = _click(server.url, f"{images.url}/bomb.png")
        assert status == 422 and 'Content-Encoding "gzip"' in error and seconds < 5, (status, error, seconds)
        assert downloads(cache) == []

        status, error, seconds = _click(server.url, "/data/upload/1/a.png")
        assert status == 422 and "FETCH_TIMEOUT" in error and seconds < 4, (status, error, seconds)
        assert [drip.path for drip in ls.drips] == ["/api/token/refresh/"]

        (cache / "downloads").mkdir(exist_ok=True)
        (cache / "downloads" / "kept.json").write_text("{}")
        present = _click(server.url, "downloads/kept.json")
        absent = _click(server.url, "downloads/gone.json")
        assert present[0] == absent[0] == 400
        assert present[1].replace("kept", "NAME") == absent[1].replace("gone", "NAME")


@pytest.mark.slow
def test_under_gunicorn_a_name_that_resolves_slowly_costs_no_more_than_fetch_timeout(tmp_path):
    """The review's case: a name that takes 8 s to resolve with FETCH_TIMEOUT=2 took 8 s. gunicorn
    runs in a mount namespace whose /etc/resolv.conf names a nameserver on 127.0.0.2:53 that never
    answers (options timeout:8 attempts:1): the click is a 422 naming FETCH_TIMEOUT after 2 s."""
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        dns.bind(("127.0.0.2", 53))
    except OSError as exc:
        dns.close()
        pytest.skip(f"cannot listen on 127.0.0.2:53 for the silent nameserver ({exc}); needs root")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.2\noptions timeout:8 attempts:1\n")
    script = f'mount --bind {resolv} /etc/resolv.conf && exec "$@"'
    env = {
        "CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_DIR": str(tmp_path / "models"),
        "IMAGE_HOSTS": "slow.example.test",
        "FETCH_TIMEOUT": "2",
    }
    try:
        with gunicorn_server(
            env, workers=1, threads=4, log_dir=tmp_path, wrapper=("unshare", "-rm", "sh", "-c", script, "sh")
        ) as server:
            status, error, seconds = _click(server.url, "http://slow.example.test/a.png")
            assert dns.recv(512), "the lookup reached the silent nameserver"
    finally:
        dns.close()
    assert status == 422 and "FETCH_TIMEOUT" in error, (status, error)
    assert seconds < 4, f"the click took {seconds:.1f} s"
