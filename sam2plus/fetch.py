"""Image URL -> a local file: Label Studio (with its API key), allowed hosts, or CACHE_DIR.

Downloads land in CACHE_DIR/downloads named by their content (SHA-1), written atomically, with
a small record per URL. A cached copy is revalidated with the server's validators (ETag,
Last-Modified) on every use, so a URL whose content changed is fetched again; servers without
validators are asked again for the whole file, except Label Studio uploads, which never change.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit, unquote

import requests

from .errors import RequestError, describe

CHUNK = 1 << 20
# Label Studio names every uploaded file uniquely and never rewrites it, and serves it without
# ETag or Last-Modified: a cached upload is used as it is instead of being fetched per click.
UPLOAD_PATH = "/data/upload/"


@dataclass(frozen=True)
class LocalImage:
    """An image file on this machine and the SHA-1 of its bytes."""

    path: Path
    digest: str


class LabelStudioAuth:
    """The Authorization header for Label Studio: a legacy token, or a personal access token
    (a JWT refresh token exchanged at /api/token/refresh/ for short-lived access tokens)."""

    def __init__(self, url: str, api_key: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._access: tuple[str, float] | None = None
        self._lock = threading.Lock()

    @property
    def is_personal_access_token(self) -> bool:
        return self.api_key.count(".") == 2 and _jwt_claims(self.api_key).get("token_type") == "refresh"

    def header(self, renew: bool = False) -> dict[str, str]:
        if not self.is_personal_access_token:
            return {"Authorization": f"Token {self.api_key}"}
        with self._lock:
            if renew or self._access is None or self._access[1] < time.time() + 10:
                response = requests.post(f"{self.url}/api/token/refresh/", json={"refresh": self.api_key},
                                         timeout=self.timeout)
                try:
                    access = response.json()["access"] if response.status_code == 200 else None
                except (ValueError, KeyError, TypeError):
                    access = None
                if not isinstance(access, str):
                    raise RequestError("LABEL_STUDIO_API_KEY", f"Label Studio refused the personal access token "
                                       f"(HTTP {response.status_code} from /api/token/refresh/)", 502)
                self._access = (access, float(_jwt_claims(access).get("exp", time.time() + 60)))
            return {"Authorization": f"Bearer {self._access[0]}"}


class ImageFetcher:
    def __init__(self, cache_dir: str | Path, label_studio: LabelStudioAuth | None = None,
                 image_hosts: tuple[str, ...] = (), max_bytes: int = 1 << 30, timeout: float = 60.0):
        self.cache_dir = Path(cache_dir).resolve()
        self.download_dir = self.cache_dir / "downloads"
        self.label_studio = label_studio
        self.image_hosts = image_hosts
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._digests: dict[tuple, str] = {}
        self._lock = threading.Lock()

    def fetch(self, url: str, field: str) -> LocalImage:
        """Resolve `url` (task data value) to a local file; `field` names it in errors."""
        if not isinstance(url, str) or not url.strip():
            raise RequestError(field, f"must be an image URL or path, got {describe(url)}")
        parts = urlsplit(url)
        if parts.scheme in ("", "file") and not parts.netloc:
            local = self._cached_file(unquote(parts.path))
            if local is not None:
                return local
            if parts.scheme == "" and url.startswith("/") and self.label_studio:
                return self._download(urljoin(self.label_studio.url + "/", url.lstrip("/")), field, True)
            if parts.scheme == "" and url.startswith("/"):
                raise RequestError(field, f"{describe(url)} is a Label Studio path but LABEL_STUDIO_URL is not set")
            raise RequestError(field, f"{describe(url)} is not a file inside CACHE_DIR")
        if parts.scheme not in ("http", "https"):
            raise RequestError(field, f"unsupported URL scheme {parts.scheme!r} in {describe(url)}")
        host = parts.netloc.lower().rsplit("@", 1)[-1]
        if self.label_studio and host == urlsplit(self.label_studio.url).netloc.lower():
            return self._download(url, field, True)
        if "*" in self.image_hosts or host in self.image_hosts or parts.hostname in self.image_hosts:
            return self._download(url, field, False)
        raise RequestError(field, f"host {host!r} is not Label Studio's and not in IMAGE_HOSTS")

    def _cached_file(self, path: str) -> LocalImage | None:
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = self.cache_dir / candidate
        resolved = candidate.resolve()
        if not resolved.is_relative_to(self.cache_dir) or not resolved.is_file():
            return None
        return LocalImage(resolved, self._digest_of(resolved))

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

    def _download(self, url: str, field: str, authenticated: bool) -> LocalImage:
        suffix = _suffix(url)
        meta_path = self.download_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".json")
        meta = _read_json(meta_path)
        cached = self._content_path(meta.get("digest"), suffix)
        if cached is None or not cached.is_file():
            meta = {}
        if authenticated and meta and UPLOAD_PATH in urlsplit(url).path:
            return LocalImage(cached, meta["digest"])  # an upload never changes: its name is unique
        headers = {}
        if meta.get("etag"):
            headers["If-None-Match"] = meta["etag"]
        if meta.get("last_modified"):
            headers["If-Modified-Since"] = meta["last_modified"]
        try:
            if authenticated:
                headers.update(self.label_studio.header())
            response = requests.get(url, headers=headers, stream=True, timeout=self.timeout)
            if response.status_code == 401 and authenticated and self.label_studio.is_personal_access_token:
                response.close()
                response = requests.get(url, headers={**headers, **self.label_studio.header(renew=True)},
                                        stream=True, timeout=self.timeout)
        except requests.RequestException as exc:
            raise RequestError(field, f"cannot fetch {describe(url)}: {type(exc).__name__}", 422) from None
        with response:
            if response.status_code == 304 and meta:
                return LocalImage(cached, meta["digest"])
            if response.status_code != 200:
                raise RequestError(field, f"cannot fetch {describe(url)}: HTTP {response.status_code}", 422)
            self.download_dir.mkdir(parents=True, exist_ok=True)
            local = self._store(response, suffix, field, url)
        validators = {"etag": response.headers.get("ETag"), "last_modified": response.headers.get("Last-Modified")}
        _write_json(meta_path, {"url": url, "digest": local.digest, **validators})
        return local

    def _content_path(self, digest: str | None, suffix: str) -> Path | None:
        """Downloads are named by their content, so a file handed to a request never changes
        under it, even when its URL's content does."""
        if not isinstance(digest, str) or not digest.isalnum():
            return None
        return self.download_dir / f"{digest}{suffix}"

    def _store(self, response: requests.Response, suffix: str, field: str, url: str) -> LocalImage:
        """Stream the body into its content-named file atomically."""
        sha = hashlib.sha1()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.download_dir, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in response.iter_content(CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise RequestError(field, f"{describe(url)} is larger than MAX_IMAGE_BYTES={self.max_bytes}", 413)
                    sha.update(chunk)
                    handle.write(chunk)
            target = self._content_path(sha.hexdigest(), suffix)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return LocalImage(target, sha.hexdigest())


def sha1_of_file(path: Path) -> str:
    sha = hashlib.sha1()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _suffix(url: str) -> str:
    suffix = Path(unquote(urlsplit(url).path)).suffix.lower()
    return suffix if suffix.isascii() and 1 < len(suffix) <= 6 and suffix[1:].isalnum() else ""


def _jwt_claims(token: str) -> dict:
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".meta-")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)
