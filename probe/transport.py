"""How the probe's bodies reach a backend. A transport answers these calls:

    setup(body) -> dict                        POST /setup
    predict(body) -> dict                      POST /predict
    artifact_names(ident) -> list[str]         GET /artifacts/<ident>: the files of a review artifact folder
    artifact_chunks(ident, name) -> chunks     GET /artifacts/<ident>/<name>: one of them

and raises ProbeError with the backend's own error message when it refuses. Everything
else in the probe (prompt, request, outputs) is the same whichever transport runs.

HttpTransport talks to a running backend (the container). LocalTransport runs the backend's
app in this process (--local): the same routes, model and pipeline, with no server and no
socket, so local and remote runs differ only in where the model lives.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import requests

from sam2plus.files import CHUNK

from .errors import FAILED, ProbeError

__all__ = ["HttpTransport", "LocalTransport", "Transport", "split_credentials"]


class Transport(Protocol):
    description: str  # where the bodies go, for messages

    def setup(self, body: dict) -> dict: ...

    def predict(self, body: dict) -> dict: ...

    def artifact_names(self, ident: str) -> list[str]: ...

    def artifact_chunks(self, ident: str, name: str) -> Iterator[bytes]: ...


class _Routes:
    """The backend's routes over a way to POST and GET (subclasses say how)."""

    def setup(self, body: dict) -> dict:
        return self._post("setup", body)

    def predict(self, body: dict) -> dict:
        return self._post("predict", body)

    def artifact_names(self, ident: str) -> list[str]:
        route = f"artifacts/{quote(ident, safe='')}"
        files = self._get_json(route).get("files")
        if not isinstance(files, list):
            raise ProbeError(f"/{route}: the backend's answer lists no files", FAILED)
        return files

    def artifact_chunks(self, ident: str, name: str) -> Iterator[bytes]:
        return self._get_chunks(f"artifacts/{quote(ident, safe='')}/{quote(name, safe='')}")

    def _post(self, route: str, body: dict) -> dict:
        raise NotImplementedError

    def _get_json(self, route: str) -> dict:
        raise NotImplementedError

    def _get_chunks(self, route: str) -> Iterator[bytes]:
        raise NotImplementedError


class HttpTransport(_Routes):
    """A backend at `url` (basic auth may be given in it: http://user:pass@host:port). The
    credentials go only into the session's Authorization header, never into messages or records."""

    def __init__(self, url: str, timeout: float = 600.0):
        self.url, auth = split_credentials(url.rstrip("/"))
        self.timeout = timeout
        self.session = requests.Session()
        self.session.auth = auth
        self.description = self.url

    def _post(self, route: str, body: dict) -> dict:
        response = self._call("POST", route, json=body)
        return _answer(route, response.status_code, _json(response), response.text)

    def _get_json(self, route: str) -> dict:
        response = self._call("GET", route)
        return _answer(route, response.status_code, _json(response), response.text)

    def _get_chunks(self, route: str) -> Iterator[bytes]:
        response = self._call("GET", route, stream=True)
        with response:
            if response.status_code != 200:
                _answer(route, response.status_code, _json(response), response.text)
            try:
                yield from response.iter_content(CHUNK)
            except requests.RequestException as exc:
                raise ProbeError(f"/{route}: the download broke off ({type(exc).__name__})", FAILED) from None

    def _call(self, method: str, route: str, **kwargs) -> requests.Response:
        try:
            return self.session.request(method, f"{self.url}/{route}", timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ProbeError(
                f"/{route}: cannot reach the backend at {self.url} ({type(exc).__name__}); is it running? (--url)",
                FAILED,
            ) from None


class LocalTransport(_Routes):
    """The backend's own WSGI app around `model` (a model.SAM2Plus), called in this process."""

    def __init__(self, model):
        from sam2plus.server import create_app

        self.model = model
        self.client = create_app(model).test_client()
        self.description = f"in-process {model.model_version}"

    @classmethod
    def from_env(cls, cache_dir: Path) -> LocalTransport:
        """Build the model as the backend would from its environment variables, with CACHE_DIR =
        `cache_dir`; CHECKPOINT_DIR defaults to ./vols/model-store, MODEL_DIR to a folder inside
        the cache dir (the container's /sam2 and /data do not exist here), and ARTIFACTS to
        `request` (this process is the probe's own backend, so --intermediates works)."""
        from model import SAM2Plus
        from sam2plus.config import ConfigError, ServerConfig

        env = {
            "CHECKPOINT_DIR": "./vols/model-store",
            "ARTIFACTS": "request",
            **os.environ,
            "CACHE_DIR": str(cache_dir),
            "MODEL_DIR": os.environ.get("MODEL_DIR") or str(cache_dir / "probe-models"),
        }
        try:
            return cls(SAM2Plus(ServerConfig.from_env(env)))
        except (ConfigError, RuntimeError, FileNotFoundError) as exc:
            raise ProbeError(f"--local: cannot build the model: {exc}", FAILED) from None

    def _post(self, route: str, body: dict) -> dict:
        response = self.client.post(f"/{route}", json=body)
        return _answer(route, response.status_code, response.get_json(silent=True), response.get_data(as_text=True))

    def _get_json(self, route: str) -> dict:
        response = self.client.get(f"/{route}")
        return _answer(route, response.status_code, response.get_json(silent=True), response.get_data(as_text=True))

    def _get_chunks(self, route: str) -> Iterator[bytes]:
        response = self.client.get(f"/{route}")
        if response.status_code != 200:
            _answer(route, response.status_code, response.get_json(silent=True), response.get_data(as_text=True))
        yield response.get_data()


def split_credentials(url: str) -> tuple[str, tuple[bytes, bytes] | None]:
    """The URL without its user-info, and the (user, password) it held, percent-decoded and
    encoded as UTF-8 (RFC 7617; requests would send str credentials as Latin-1)."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), (unquote(user).encode(), unquote(password).encode())


def _answer(route: str, status: int, payload, text: str) -> dict:
    if status == 200 and isinstance(payload, dict):
        return payload
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        message = payload["error"]
    else:
        message = " ".join(text.split())[:500] or "(empty answer)"
    raise ProbeError(f"/{route} failed (HTTP {status}): {message}", FAILED)


def _json(response: requests.Response):
    try:
        return response.json()
    except ValueError:
        return None
