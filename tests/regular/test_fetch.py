"""sam2plus.fetch: task image values -> local files, against real HTTP servers on 127.0.0.1.

The servers here are small stand-ins started by the tests (http.server in a thread). The one
answering /api/token/refresh/ plays Label Studio's token endpoint for personal access tokens,
the one answering /tasks/<id>/presign/ plays its presign redirect to an object store; the real
Label Studio and a real S3 server are exercised by the end-to-end tests in tests/e2e. A
"capture" server stands for an attacker's host: it must see no connection at all.
"""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from sam2plus.downloads import EVICTION_LOCK
from sam2plus.errors import RequestError
from sam2plus.fetch import ImageFetcher, LabelStudioAuth

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
    return sorted(p.name for p in folder.iterdir() if p.name != EVICTION_LOCK) if folder.exists() else []


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


def test_paths_outside_cache_dir_refused(tmp_path, cache_dir):
    outside = tmp_path / "outside.png"
    outside.write_bytes(PNG)
    (cache_dir / "link.png").symlink_to(outside)
    fetcher = ImageFetcher(cache_dir)

    for url in ("/etc/passwd", "file:///etc/passwd", "../outside.png", "sub/../../outside.png",
                str(cache_dir / ".." / "outside.png"), str(outside), "link.png", "file://" + str(outside),
                "/", "."):
        message = refused(lambda: fetcher.fetch(url, FIELD), 400)
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


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/image.png", "//127.0.0.1/image.png", "file://127.0.0.1/etc/passwd",
                                 "gopher://127.0.0.1:70/x", "javascript:alert(1)"])
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
    assert [r["headers"].get("Authorization") for r in ls.requests] == [f"Token {KEY}"], \
        "a Label Studio upload never changes: its cached copy is not fetched again"


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
        access = unsigned_jwt({"token_type": "access", "exp": int(time.time() + self.access_lifetime),
                               "jti": f"access-{len(self.issued)}"})
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
        f"Bearer {tokens.issued[0]}", f"Bearer {tokens.issued[0]}", f"Bearer {tokens.issued[1]}"]
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
