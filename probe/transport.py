"""How the probe's bodies reach a backend. A transport answers two calls:

    setup(body) -> dict       POST /setup
    predict(body) -> dict     POST /predict

and raises ProbeError with the backend's own error message when it refuses. Everything
else in the probe (prompt, request, outputs) is the same whichever transport runs.

HttpTransport talks to a running backend (the container). LocalTransport runs the backend's
app in this process (--local): the same routes, model and pipeline, with no server and no
socket, so local and remote runs differ only in where the model lives.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import requests

from .errors import FAILED, ProbeError


class Transport(Protocol):
    description: str  # where the bodies go, for messages

    def setup(self, body: dict) -> dict: ...

    def predict(self, body: dict) -> dict: ...


class _RoutePoster:
    """setup() and predict() as POSTs to the backend's routes; subclasses say how to POST."""

    def setup(self, body: dict) -> dict:
        return self._post("setup", body)

    def predict(self, body: dict) -> dict:
        return self._post("predict", body)

    def _post(self, route: str, body: dict) -> dict:
        raise NotImplementedError


class HttpTransport(_RoutePoster):
    """A backend at `url` (basic auth may be given in it: http://user:pass@host:port). The
    credentials go only into the session's Authorization header, never into messages or records."""

    def __init__(self, url: str, timeout: float = 600.0):
        self.url, auth = split_credentials(url.rstrip("/"))
        self.timeout = timeout
        self.session = requests.Session()
        self.session.auth = auth
        self.description = self.url

    def _post(self, route: str, body: dict) -> dict:
        try:
            response = self.session.post(f"{self.url}/{route}", json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ProbeError(f"/{route}: cannot reach the backend at {self.url} ({type(exc).__name__}); "
                             f"is it running? (--url)", FAILED) from None
        return _answer(route, response.status_code, _json(response), response.text)


class LocalTransport(_RoutePoster):
    """The backend's own WSGI app around `model` (a model.SAM2Plus), called in this process."""

    def __init__(self, model):
        from sam2plus.server import create_app

        self.model = model
        self.client = create_app(model).test_client()
        self.description = f"in-process {model.model_version}"

    @classmethod
    def from_env(cls, cache_dir: Path) -> "LocalTransport":
        """Build the model as the backend would from its environment variables, with CACHE_DIR =
        `cache_dir`; CHECKPOINT_DIR defaults to ./vols/model-store, MODEL_DIR to a folder inside
        the cache dir (the container's /sam2 and /data do not exist here), and ARTIFACTS to
        `request` (this process is the probe's own backend, so --intermediates works)."""
        from model import SAM2Plus
        from sam2plus.config import ConfigError, ServerConfig

        env = {"CHECKPOINT_DIR": "./vols/model-store", "ARTIFACTS": "request", **os.environ,
               "CACHE_DIR": str(cache_dir), "MODEL_DIR": os.environ.get("MODEL_DIR") or str(cache_dir / "probe-models")}
        try:
            return cls(SAM2Plus(ServerConfig.from_env(env)))
        except (ConfigError, RuntimeError, FileNotFoundError) as exc:
            raise ProbeError(f"--local: cannot build the model: {exc}", FAILED) from None

    def _post(self, route: str, body: dict) -> dict:
        response = self.client.post(f"/{route}", json=body)
        return _answer(route, response.status_code, response.get_json(silent=True), response.get_data(as_text=True))


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
