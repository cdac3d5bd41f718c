"""Task image value -> a local file: a file inside CACHE_DIR, a data: URL, or a download.

Downloads go through `urls.UrlPolicy` (what may be requested, hop by hop) and
`transport.HttpClient` (how), and land in `downloads.DownloadCache`, named by their content.
A cached copy is revalidated with the server's validators (ETag, Last-Modified) on every use,
so a URL whose content changed is fetched again; servers without validators are asked again
for the whole file, except Label Studio uploads, which never change. Cloud storage URIs are
resolved through Label Studio's presign endpoint on every use, so an expired presigned URL is
never reused.

A download has one deadline, FETCH_TIMEOUT (`timeout`) for all of it: name resolution, the
refresh of a personal access token, the connections, every redirect hop and the body
(`watchdog.Watch`). Only the identity content coding is accepted: a body sent with another is
refused before it is read. A task value naming a file inside CACHE_DIR that is not an image
this backend reads is answered as a name that is not there. A click's download also stops, as `Stopped`, when
its `should_stop()` turns true (its client went away).
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlsplit

from urllib3 import HTTPResponse
from urllib3.exceptions import HTTPError, NameResolutionError, NewConnectionError, TimeoutError

from .downloads import DownloadCache, LocalImage
from .errors import RequestError, Stopped, describe
from .files import CHUNK, sha1_of_file
from .images import SUPPORTED_FORMATS
from .logtext import logtext
from .transport import HttpClient, PrivateAddressError
from .urls import Target, UrlPolicy, check_characters, parse_data_url, parse_origin
from .watchdog import DEADLINE, STOPPED, WATCHDOG, Watch

__all__ = ["ImageFetcher", "LabelStudioAuth", "LocalImage"]

log = logging.getLogger(__name__)
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)


class LabelStudioAuth:
    """The Authorization header for Label Studio: a legacy token, or a personal access token
    (a JWT refresh token exchanged at /api/token/refresh/ for short-lived access tokens)."""

    def __init__(self, url: str, api_key: str | None, timeout: float = 10.0, client: HttpClient | None = None):
        origin = parse_origin(url)
        self.url = origin.url
        self.api_key = api_key or ""
        self.client = client or HttpClient(timeout)
        self._refresh = Target(
            f"{origin.url}/api/token/refresh/",
            origin.host,
            origin.port,
            label_studio=True,
            via_label_studio=True,
            public_only=False,
        )
        self._access: tuple[str, float] | None = None
        self._lock = threading.Lock()

    @property
    def is_personal_access_token(self) -> bool:
        return self.api_key.count(".") == 2 and _jwt_claims(self.api_key).get("token_type") == "refresh"

    def header(self, renew: bool = False, watch: Watch | None = None) -> dict[str, str]:
        """The header for a request to Label Studio ({} without a key); urllib3 errors propagate.
        A refresh is part of the download `watch` watches: it waits for another thread's refresh,
        and asks Label Studio, within that download's deadline (a urllib3 TimeoutError past it)."""
        if not self.api_key:
            return {}
        if not self.is_personal_access_token:
            return {"Authorization": f"Token {self.api_key}"}
        if not self._lock.acquire(timeout=watch.remaining() if watch is not None else -1):
            raise TimeoutError("waited for another refresh of the access token")
        try:
            if renew or self._access is None or self._access[1] < time.time() + 10:
                self._access = self._refreshed(watch)
            return {"Authorization": f"Bearer {self._access[0]}"}
        finally:
            self._lock.release()

    def _refreshed(self, watch: Watch | None) -> tuple[str, float]:
        """A new access token and its expiry, from Label Studio's /api/token/refresh/."""
        body = json.dumps({"refresh": self.api_key}).encode()
        response = self.client.request("POST", self._refresh, {"Content-Type": "application/json"}, body, watch=watch)
        try:
            coded = _content_coding(response)
            answer = b"" if coded else response.read(1 << 16, decode_content=False)
        finally:
            _finish(response, watch=watch)
        if watch is not None and (watch.reason is not None or watch.remaining() <= 0):
            raise TimeoutError("the refresh of the access token was cut at the deadline")  # urllib3's
        try:
            access = json.loads(answer)["access"] if response.status == 200 else None
        except (ValueError, KeyError, TypeError):
            access = None
        if not isinstance(access, str):
            raise RequestError(
                "LABEL_STUDIO_API_KEY",
                f"Label Studio refused the personal access token (HTTP {response.status} from /api/token/refresh/)",
                502,
            )
        return access, float(_jwt_claims(access).get("exp", time.time() + 60))


class ImageFetcher:
    """Resolves task image values to local files (see the module docstring for the forms)."""

    def __init__(
        self,
        cache_dir: str | Path,
        label_studio: LabelStudioAuth | None = None,
        image_hosts: tuple[str, ...] = (),
        max_bytes: int = 1 << 30,
        timeout: float = 60.0,
        *,
        block_private: bool = True,
        cache_bytes: int = 10 << 30,
        check: Callable[[Path, str], object] | None = None,
    ):
        self.cache_dir = Path(cache_dir).resolve()
        self.check = check  # check(path, field) on each new download or data: body, raising to refuse it
        self.downloads = DownloadCache(self.cache_dir / "downloads", cache_bytes)
        self.download_dir = self.downloads.directory
        self.label_studio = label_studio
        self.policy = UrlPolicy(label_studio.url if label_studio else None, image_hosts, block_private)
        self.client = HttpClient(timeout)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._digests: dict[tuple, str] = {}
        self._lock = threading.Lock()

    def fetch(self, value: str, field: str, task_id=None, should_stop: Callable[[], bool] | None = None) -> LocalImage:
        """Resolve a task data value to a local file; `field` names it in errors and `task_id`
        (the task's id) resolves cloud storage URIs. A download takes `timeout` seconds at most and
        stops with `Stopped` once `should_stop()` is true (asked on the watchdog's thread, in a copy
        of this thread's context)."""
        if not isinstance(value, str) or not value.strip():
            raise RequestError(field, f"must be an image URL or path, got {describe(value)}")
        if value.startswith("data:"):
            return self._inline(value, field)
        check_characters(value, field)
        parts = urlsplit(value)
        if parts.scheme in ("", "file") and not parts.netloc:
            local = self._cached_file(unquote(parts.path), field)
            if local is not None:
                return local
            if parts.scheme == "file" or not value.startswith("/"):
                raise RequestError(
                    field,
                    f"{describe(value)} is not a file inside CACHE_DIR holding an image this backend reads "
                    f"(one of {', '.join(SUPPORTED_FORMATS)} within MAX_IMAGE_PIXELS)",
                )
        target = self.policy.task_target(value, field, task_id)
        with WATCHDOG.watching(Watch(self.timeout, should_stop)) as watch:
            return self._download(target, field, value, watch)

    # -- local files and data: URLs -------------------------------------------------------------
    def _cached_file(self, path: str, field: str) -> LocalImage | None:
        """The image file inside CACHE_DIR that `path` names, or None: for a name that is not there
        and for a file that `check` refuses alike, so that task values cannot probe the cache's
        file names (downloads, frames, records)."""
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = self.cache_dir / candidate
        try:
            resolved = candidate.resolve()
            if not resolved.is_relative_to(self.cache_dir) or not resolved.is_file():
                return None
        except OSError:  # a name too long for the file system, a symlink loop
            return None
        try:
            checked = self.check(resolved, field) if self.check else None
        except RequestError:
            return None
        if resolved.parent == self.download_dir:  # a download named directly: kept while in use
            local = self.downloads.lease(resolved, self._digest_of(resolved))
            return dataclasses.replace(local, checked=checked) if local is not None else None
        return LocalImage(resolved, self._digest_of(resolved), checked=checked)

    def _digest_of(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        with self._lock:
            known = self._digests.get(key)
        if known is None:
            known = sha1_of_file(path)
            with self._lock:
                self._digests[key] = known
        return known

    def _inline(self, value: str, field: str) -> LocalImage:
        """A data: URL image, stored by content like a download."""
        data = parse_data_url(value, field, self.max_bytes)
        digest = hashlib.sha1(data.body).hexdigest()
        return self.downloads.get(digest, data.suffix) or self._store([data.body], data.suffix, field, value)

    # -- downloads ------------------------------------------------------------------------------
    def _download(self, target: Target, field: str, value: str, watch: Watch) -> LocalImage:
        suffix = _suffix(value)
        record = self.downloads.record(target.url)
        cached = self.downloads.get(record.get("digest"), suffix)
        if cached is not None and target.immutable:
            return cached  # an upload never changes: its name is unique
        validators = {"If-None-Match": record.get("etag"), "If-Modified-Since": record.get("last_modified")}
        headers = {name: value for name, value in validators.items() if cached is not None and value}
        response = self._follow(target, headers, field, value, watch)
        consumed = False
        try:
            if response.status == 304 and cached is not None:
                return cached
            if cached is not None:
                cached.release()
            if response.status != 200:
                hint = " (LABEL_STUDIO_API_KEY missing or refused)" if response.status == 401 else ""
                raise RequestError(field, f"cannot fetch {describe(value)}: HTTP {response.status}{hint}", 422)
            coding = _content_coding(response)
            if coding:
                raise RequestError(
                    field,
                    f"cannot fetch {describe(value)}: sent with Content-Encoding {describe(coding)}; the backend "
                    "asks for identity (no compression) and inflates nothing",
                    422,
                )
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > self.max_bytes:
                raise _too_large(field, value, self.max_bytes)
            local = self._store(self._body(response, field, value, watch), suffix, field, value)
            consumed = True
        finally:
            _finish(response, consumed, watch)
        self.downloads.save_record(
            target.url,
            {
                "url": target.url,
                "digest": local.digest,
                "etag": response.headers.get("ETag"),
                "last_modified": response.headers.get("Last-Modified"),
            },
        )
        return local

    def _store(self, chunks, suffix: str, field: str, value: str) -> LocalImage:
        """The download cache's `store` (keeping only what `check` accepts), with a full disk told
        as such (507) instead of a fault."""
        check = self.check
        try:
            return self.downloads.store(chunks, suffix, check and (lambda path: check(path, field)))
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            log.error("cannot store a download of %s in %s: %s", logtext(value), self.download_dir, exc)
            raise RequestError(
                field,
                f"cannot store {describe(value)}: no space left on the disk of CACHE_DIR "
                "(the backend's operator must free some)",
                507,
            ) from None

    def _follow(self, target: Target, headers: dict[str, str], field: str, value: str, watch: Watch) -> HTTPResponse:
        """GET `target`, following redirects as the policy allows (a few hops, one deadline)."""
        what = describe(value)
        for _ in range(MAX_REDIRECTS + 1):
            response = self._get(target, headers, field, what, watch)
            location = response.headers.get("Location")
            if response.status not in REDIRECTS or location is None:
                return response
            _finish(response, watch=watch)
            target = self.policy.redirect(target, location, field)
            what = f"{describe(value)} (redirected to {describe(target.url)})"
        raise RequestError(field, f"cannot fetch {describe(value)}: more than {MAX_REDIRECTS} redirects", 422)

    def _get(self, target: Target, headers: dict[str, str], field: str, what: str, watch: Watch) -> HTTPResponse:
        """One request; Label Studio's key goes only to targets the policy marks as Label Studio's."""
        auth = self.label_studio if target.label_studio else None
        try:
            self._check(watch, field, what)
            credentials = auth.header(watch=watch) if auth else {}
            response = self.client.request("GET", target, {**headers, **credentials}, watch=watch)
            if response.status == 401 and auth is not None and auth.is_personal_access_token:
                _finish(response, watch=watch)  # the access token was revoked or expired early: renew once
                self._check(watch, field, what)
                credentials = auth.header(renew=True, watch=watch)
                response = self.client.request("GET", target, {**headers, **credentials}, watch=watch)
        except PrivateAddressError as exc:
            raise RequestError(
                field,
                f"{what}: host {target.netloc!r} resolves to {exc.address}, which is not a "
                "public address (IMAGE_HOSTS_BLOCK_PRIVATE); name the host in IMAGE_HOSTS to "
                "allow it",
            ) from None
        except HTTPError as exc:
            raise self._failed(watch, field, what, _failure(exc)) from None
        return response

    def _body(self, response: HTTPResponse, field: str, value: str, watch: Watch) -> Iterator[bytes]:
        size = 0
        try:
            for chunk in response.stream(CHUNK, decode_content=False):
                size += len(chunk)
                if size > self.max_bytes:
                    raise _too_large(field, value, self.max_bytes)
                self._check(watch, field, describe(value))
                yield chunk
        except HTTPError as exc:
            raise self._failed(watch, field, describe(value), _failure(exc)) from None
        self._check(watch, field, describe(value))  # a body read until close and cut short is no image

    def _check(self, watch: Watch, field: str, what: str) -> None:
        """Go on only while the watch has not fired and its deadline has not passed."""
        if watch.reason is not None or watch.remaining() <= 0:
            raise self._failed(watch, field, what, "timed out")

    def _failed(self, watch: Watch, field: str, what: str, failure: str) -> Exception:
        """What a failed download raises: Stopped when its client went away, a 422 otherwise,
        told as the deadline when it passed (the watchdog's cut reads as a broken connection)."""
        if watch.reason == STOPPED:
            return Stopped(f"the client went away; stopped downloading {what}")
        if watch.reason == DEADLINE or watch.remaining() <= 0:
            failure = f"timed out: the whole download, redirects included, may take {watch.seconds:g} s (FETCH_TIMEOUT)"
        return RequestError(field, f"cannot fetch {what}: {failure}", 422)


def _finish(response: HTTPResponse, consumed: bool = False, watch: Watch | None = None) -> None:
    """Hand the connection back to its pool; one with an unread body, or one the watchdog cut, is
    closed instead (disarmed first: a pooled socket may be another download's next)."""
    if watch is not None and watch.disarm():
        consumed = False
    if not consumed:
        response.close()
    response.release_conn()


def _content_coding(response: HTTPResponse) -> str:
    """The response's content coding when it is not identity ('' for identity or none)."""
    coding = response.headers.get("Content-Encoding", "").strip()
    return "" if coding.lower() in ("", "identity") else coding


def _failure(exc: HTTPError) -> str:
    if isinstance(exc, NameResolutionError):
        return "host name not resolved"
    if isinstance(exc, NewConnectionError):  # before TimeoutError: urllib3 derives one from the other
        return "connection failed"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"connection broken ({type(exc).__name__})"


def _too_large(field: str, value: str, max_bytes: int) -> RequestError:
    return RequestError(field, f"{describe(value)} is larger than MAX_IMAGE_BYTES={max_bytes}", 413)


def _suffix(value: str) -> str:
    """The file suffix of the image a value names (its path, or Label Studio's `d`/`filepath`)."""
    parts = urlsplit(value)
    query = parse_qs(parts.query)
    name = (query.get("d") or query.get("filepath") or [parts.path])[0]
    suffix = PurePosixPath(unquote(name)).suffix.lower()
    return suffix if suffix.isascii() and 1 < len(suffix) <= 6 and suffix[1:].isalnum() else ""


def _jwt_claims(token: str) -> dict:
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
