"""The backend process's settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from .urls import parse_host_rule, parse_origin


ARTIFACT_MODES = ("off", "on", "request")
_ARTIFACT_ALIASES = {"false": "off", "0": "off", "true": "on", "1": "on"}


class ConfigError(RuntimeError):
    """A setting of the environment that the backend cannot start with."""


@dataclass(frozen=True)
class ServerConfig:
    device: str = "auto"
    model_config: str = "configs/sam2.1/sam2.1_hiera_l.yaml"
    model_checkpoint: str = "sam2.1_hiera_large.pt"
    checkpoint_dir: str = "/sam2/checkpoints"
    cache_dir: str = "/cache"
    model_dir: str = "/data/models"
    label_studio_url: str | None = None
    label_studio_api_key: str | None = None
    image_hosts: tuple[str, ...] = ()
    image_hosts_block_private: bool = True
    download_cache_mb: int = 10240
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = None
    max_image_pixels: int = 300_000_000
    max_image_bytes: int = 1 << 30
    fetch_timeout: float = 60.0
    embedding_cache_mb: int = 1024
    frame_cache_mb: int = 4096
    artifacts: str = "off"  # "off", "on" (every request) or "request" (when /predict asks with "artifacts": true)
    artifacts_mb: int = 1024  # review artifacts kept in CACHE_DIR/artifacts, oldest folders removed first
    max_request_bytes: int = 128 << 20  # request bodies (Flask's MAX_CONTENT_LENGTH); fits a data: URL of a 95 MB JPEG

    def __post_init__(self):
        if self.artifacts not in ARTIFACT_MODES:
            raise ConfigError(f"ARTIFACTS={self.artifacts!r} must be off, on or request")
        if self.basic_auth_user and not self.basic_auth_pass:
            raise ConfigError("BASIC_AUTH_USER is set but BASIC_AUTH_PASS is empty: set a password, "
                              "or leave BASIC_AUTH_USER empty to turn basic auth off")
        if self.basic_auth_pass and not self.basic_auth_user:
            raise ConfigError("BASIC_AUTH_PASS is set but BASIC_AUTH_USER is empty: set a user name, "
                              "or leave BASIC_AUTH_PASS empty to turn basic auth off")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ServerConfig":
        env = os.environ if env is None else env
        d = cls()

        def text(name: str, default: str | None) -> str | None:
            value = env.get(name, "").strip()
            return value or default

        def number(name: str, default, kind=int):
            value = text(name, None)
            if value is None:
                return default
            try:
                parsed = kind(value)
            except ValueError:
                raise ConfigError(f"{name}={value!r} is not a valid {kind.__name__}") from None
            if parsed <= 0:
                raise ConfigError(f"{name}={value!r} must be > 0")
            return parsed

        device = text("DEVICE", d.device).lower()
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            raise ConfigError(f"DEVICE={device!r} must be auto, cpu or cuda")
        artifacts = text("ARTIFACTS", d.artifacts).lower()
        artifacts = _ARTIFACT_ALIASES.get(artifacts, artifacts)
        hosts = tuple(h.strip().lower() for h in (text("IMAGE_HOSTS", "") or "").split(",") if h.strip())
        for host in hosts:
            if host != "*":
                try:
                    parse_host_rule(host)
                except ValueError as exc:
                    raise ConfigError(f"IMAGE_HOSTS: {exc} (or *)") from None
        label_studio_url = (text("LABEL_STUDIO_URL", None) or "").rstrip("/") or None
        if label_studio_url:
            try:
                parse_origin(label_studio_url)
            except ValueError as exc:
                raise ConfigError(f"LABEL_STUDIO_URL={exc}") from None
        block_private = text("IMAGE_HOSTS_BLOCK_PRIVATE", "true").lower()
        if block_private not in ("true", "false", "on", "off", "1", "0"):
            raise ConfigError(f"IMAGE_HOSTS_BLOCK_PRIVATE={block_private!r} must be true or false")
        return cls(
            device=device,
            model_config=text("MODEL_CONFIG", d.model_config),
            model_checkpoint=text("MODEL_CHECKPOINT", d.model_checkpoint),
            checkpoint_dir=text("CHECKPOINT_DIR", d.checkpoint_dir),
            cache_dir=text("CACHE_DIR", d.cache_dir),
            model_dir=text("MODEL_DIR", d.model_dir),
            label_studio_url=label_studio_url,
            label_studio_api_key=text("LABEL_STUDIO_API_KEY", None),
            image_hosts=hosts,
            image_hosts_block_private=block_private in ("true", "on", "1"),
            download_cache_mb=number("DOWNLOAD_CACHE_MB", d.download_cache_mb),
            basic_auth_user=text("BASIC_AUTH_USER", None),
            basic_auth_pass=text("BASIC_AUTH_PASS", None),
            max_image_pixels=number("MAX_IMAGE_PIXELS", d.max_image_pixels),
            max_image_bytes=number("MAX_IMAGE_BYTES", d.max_image_bytes),
            fetch_timeout=number("FETCH_TIMEOUT", d.fetch_timeout, float),
            embedding_cache_mb=number("EMBEDDING_CACHE_MB", d.embedding_cache_mb),
            frame_cache_mb=number("FRAME_CACHE_MB", d.frame_cache_mb),
            artifacts=artifacts,
            artifacts_mb=number("ARTIFACTS_MB", d.artifacts_mb),
            max_request_bytes=number("MAX_REQUEST_BYTES", d.max_request_bytes),
        )
