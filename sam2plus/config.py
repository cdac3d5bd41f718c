"""The backend process's settings, read once from the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .prompts import MAX_PROMPT_POINTS
from .settings import settings_url_problem
from .urls import parse_host_rule, parse_origin

__all__ = [
    "ARTIFACT_MODES",
    "ENCODER_PRECISIONS",
    "ENCODER_RUNTIMES",
    "LOG_LEVELS",
    "UNTRAINED",
    "MAX_JSON_DEPTH",
    "SECRET_FILE_BYTES",
    "checkpoint_file",
    "ConfigError",
    "ServerConfig",
    "ServingConfig",
]

ARTIFACT_MODES = ("off", "on", "request")
ENCODER_RUNTIMES = ("auto", "torch", "openvino")  # what runs SAM2's image encoder (sam2plus.encoders)
ENCODER_PRECISIONS = ("auto", "bf16", "f32")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
UNTRAINED = "untrained"  # MODEL_CHECKPOINT for SAM2's architecture with random weights
# Python's JSON parser stops at its recursion limit (about 1000 levels); the limit stays well below it.
MAX_JSON_DEPTH = 512
SECRET_FILE_BYTES = 64 << 10  # a secret read from a *_FILE: a password, a token, a URL
_ARTIFACT_ALIASES = {"false": "off", "0": "off", "true": "on", "1": "on"}


def checkpoint_file(checkpoint: str, checkpoint_dir: str) -> Path | None:
    """The file MODEL_CHECKPOINT names (in CHECKPOINT_DIR unless it is absolute); None for untrained weights."""
    if checkpoint == UNTRAINED:
        return None
    return Path(checkpoint_dir) / checkpoint  # an absolute checkpoint replaces the directory


class ConfigError(RuntimeError):
    """Settings of the environment that the backend cannot start with: one line per problem."""

    def __init__(self, *problems: str):
        self.problems = problems
        super().__init__("\n".join(problems))


class _Env:
    """Reads settings from an environment, collecting every problem instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.problems: list[str] = []

    def text(self, name: str, default: str | None) -> str | None:
        """The stripped value; blank counts as unset."""
        value = self.env.get(name, "").strip()
        return value or default

    def secret(self, name: str) -> str | None:
        """`name`'s value, or when it is blank the content of the file `name`_FILE names (Docker's
        convention for secrets kept out of the environment), stripped; at most SECRET_FILE_BYTES."""
        value = self.text(name, None)
        path = self.text(f"{name}_FILE", None)
        if value is not None or path is None:
            return value
        try:
            with open(path, "rb") as handle:
                data = handle.read(SECRET_FILE_BYTES + 1)
        except OSError as exc:
            return self.problem(f"{name}_FILE={path!r} cannot be read ({exc.strerror or exc}), so {name} is not set")
        if len(data) > SECRET_FILE_BYTES:
            return self.problem(f"{name}_FILE={path!r} holds more than {SECRET_FILE_BYTES} bytes: not a {name}")
        try:
            return data.decode("utf-8").strip() or None
        except UnicodeDecodeError:
            return self.problem(f"{name}_FILE={path!r} is not UTF-8 text")

    def number(self, name: str, default, kind=int, minimum=None, maximum=None):
        """A number > 0 (or from `minimum`), at most `maximum`; a bad value is a problem and gives the default."""
        value = self.text(name, None)
        if value is None:
            return default
        try:
            parsed = kind(value)
        except ValueError:
            return self.problem(f"{name}={value!r} is not a valid {kind.__name__}", default)
        low_ok = parsed > 0 if minimum is None else parsed >= minimum
        if not low_ok or (maximum is not None and parsed > maximum):
            low = "> 0" if minimum is None else f">= {minimum}"
            return self.problem(f"{name}={value!r} must be {low}" + (f" and <= {maximum}" if maximum else ""), default)
        return parsed

    def problem(self, text: str, result=None):
        self.problems.append(text)
        return result

    def build(self, cls, **values):
        """`cls(**values)` (a config dataclass, whose own checks add their problems); every
        problem found raises one ConfigError."""
        try:
            built = cls(**values)
        except ConfigError as exc:
            self.problems.extend(exc.problems)
        if self.problems:
            raise ConfigError(*self.problems)
        return built


@dataclass(frozen=True)
class ServerConfig:
    """What one backend process serves with (docs/configuration.md)."""

    device: str = "auto"
    model_config: str = "configs/sam2.1/sam2.1_hiera_l.yaml"
    model_checkpoint: str = "sam2.1_hiera_large.pt"
    checkpoint_dir: str = "/sam2/checkpoints"
    cache_dir: str = "/cache"
    model_dir: str = "/data/models"
    # The settings store: blank is SQLite in MODEL_DIR; postgresql://... is shared by replicas
    settings_url: str | None = None
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
    decode_timeout: float = 60.0  # a decode, waiting for another large one included; then a 422
    settings_timeout: float = 3.0  # a PostgreSQL settings read or write; then the last read settings or a 503
    embedding_cache_mb: int = 1024
    # The embedding store on disk (sam2plus/embeddingstore.py): blank is CACHE_DIR/embeddings; 0 MB turns it off
    embedding_store_dir: str | None = None
    embedding_store_mb: int = 10240
    frame_cache_mb: int = 4096
    artifacts: str = "off"  # "off", "on" (every request) or "request" (when /predict asks with "artifacts": true)
    artifacts_mb: int = 1024  # review artifacts kept in CACHE_DIR/artifacts, oldest folders removed first
    max_request_bytes: int = 128 << 20  # request bodies (Flask's MAX_CONTENT_LENGTH); fits a data: URL of a 95 MB JPEG
    max_json_depth: int = 64  # nesting of a request body; Label Studio's deepest (a polygon point) is 10
    # Arrays, objects and commas of a request body, counted before it is parsed; each costs up to
    # ~100 bytes parsed (docs/security.md, Limits). A brush region of a 100 MP image is ~52000.
    max_json_items: int = 1_000_000
    max_tasks: int = 1000  # tasks in one /predict body (Label Studio's batch predictions send many)
    max_prompt_points: int = MAX_PROMPT_POINTS  # keypoints in one click's context
    encoder_runtime: str = "auto"  # auto: OpenVINO on a CPU where it passes parity, torch on CUDA
    encoder_precision: str = "auto"  # auto: bf16 where the CPU (or GPU) has it, f32 otherwise

    @property
    def embedding_store_path(self) -> Path:
        """The embedding store's folder: EMBEDDING_STORE_DIR, or CACHE_DIR/embeddings."""
        return Path(self.embedding_store_dir or Path(self.cache_dir) / "embeddings")

    def __post_init__(self):
        problems = []
        if self.encoder_runtime not in ENCODER_RUNTIMES:
            problems.append(f"ENCODER_RUNTIME={self.encoder_runtime!r} must be one of {', '.join(ENCODER_RUNTIMES)}")
        if self.encoder_precision not in ENCODER_PRECISIONS:
            problems.append(
                f"ENCODER_PRECISION={self.encoder_precision!r} must be one of {', '.join(ENCODER_PRECISIONS)}"
            )
        if self.artifacts not in ARTIFACT_MODES:
            problems.append(f"ARTIFACTS={self.artifacts!r} must be off, on or request")
        if self.basic_auth_user and not self.basic_auth_pass:
            problems.append(
                "BASIC_AUTH_USER is set but BASIC_AUTH_PASS is empty: set a password, "
                "or leave BASIC_AUTH_USER empty to turn basic auth off"
            )
        if self.basic_auth_pass and not self.basic_auth_user:
            problems.append(
                "BASIC_AUTH_PASS is set but BASIC_AUTH_USER is empty: set a user name, "
                "or leave BASIC_AUTH_PASS empty to turn basic auth off"
            )
        if not 2 <= self.max_json_depth <= MAX_JSON_DEPTH:
            problems.append(f"MAX_JSON_DEPTH={self.max_json_depth} must be from 2 to {MAX_JSON_DEPTH}")
        if problem := settings_url_problem(self.settings_url):
            problems.append(problem)
        if problems:
            raise ConfigError(*problems)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerConfig:
        """The settings of `env` (the process environment by default); every bad one is a line of the ConfigError."""
        env = _Env(os.environ if env is None else env)
        d = cls()
        device = env.text("DEVICE", d.device).lower()
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            device = env.problem(f"DEVICE={device!r} must be auto, cpu, cuda or cuda:N", d.device)
        artifacts = env.text("ARTIFACTS", d.artifacts).lower()
        artifacts = _ARTIFACT_ALIASES.get(artifacts, artifacts)
        hosts = tuple(h.strip().lower() for h in (env.text("IMAGE_HOSTS", "") or "").split(",") if h.strip())
        for host in hosts:
            if host != "*":
                try:
                    parse_host_rule(host)
                except ValueError as exc:
                    env.problem(f"IMAGE_HOSTS: {exc} (or *)")
        label_studio_url = (env.text("LABEL_STUDIO_URL", None) or "").rstrip("/") or None
        if label_studio_url:
            try:
                parse_origin(label_studio_url)
            except ValueError:
                label_studio_url = env.problem(
                    f"LABEL_STUDIO_URL={_without_userinfo(label_studio_url)!r} is not http(s)://host[:port][/path]"
                )
        block_private = env.text("IMAGE_HOSTS_BLOCK_PRIVATE", "true").lower()
        if block_private not in ("true", "false", "on", "off", "1", "0"):
            env.problem(f"IMAGE_HOSTS_BLOCK_PRIVATE={block_private!r} must be true or false")
        return env.build(
            cls,
            device=device,
            model_config=env.text("MODEL_CONFIG", d.model_config),
            model_checkpoint=env.text("MODEL_CHECKPOINT", d.model_checkpoint),
            checkpoint_dir=env.text("CHECKPOINT_DIR", d.checkpoint_dir),
            cache_dir=env.text("CACHE_DIR", d.cache_dir),
            model_dir=env.text("MODEL_DIR", d.model_dir),
            settings_url=env.secret("SETTINGS_URL"),
            label_studio_url=label_studio_url,
            label_studio_api_key=env.secret("LABEL_STUDIO_API_KEY"),
            image_hosts=hosts,
            image_hosts_block_private=block_private in ("true", "on", "1"),
            download_cache_mb=env.number("DOWNLOAD_CACHE_MB", d.download_cache_mb),
            basic_auth_user=env.text("BASIC_AUTH_USER", None),
            basic_auth_pass=env.secret("BASIC_AUTH_PASS"),
            max_image_pixels=env.number("MAX_IMAGE_PIXELS", d.max_image_pixels),
            max_image_bytes=env.number("MAX_IMAGE_BYTES", d.max_image_bytes),
            fetch_timeout=env.number("FETCH_TIMEOUT", d.fetch_timeout, float),
            decode_timeout=env.number("DECODE_TIMEOUT", d.decode_timeout, float),
            settings_timeout=env.number("SETTINGS_TIMEOUT", d.settings_timeout, float),
            embedding_cache_mb=env.number("EMBEDDING_CACHE_MB", d.embedding_cache_mb),
            embedding_store_dir=env.text("EMBEDDING_STORE_DIR", d.embedding_store_dir),
            embedding_store_mb=env.number("EMBEDDING_STORE_MB", d.embedding_store_mb, minimum=0),
            frame_cache_mb=env.number("FRAME_CACHE_MB", d.frame_cache_mb),
            artifacts=artifacts,
            artifacts_mb=env.number("ARTIFACTS_MB", d.artifacts_mb),
            max_request_bytes=env.number("MAX_REQUEST_BYTES", d.max_request_bytes),
            max_json_depth=env.number("MAX_JSON_DEPTH", d.max_json_depth, minimum=2, maximum=MAX_JSON_DEPTH),
            max_json_items=env.number("MAX_JSON_ITEMS", d.max_json_items),
            max_tasks=env.number("MAX_TASKS", d.max_tasks),
            max_prompt_points=env.number("MAX_PROMPT_POINTS", d.max_prompt_points),
            encoder_runtime=env.text("ENCODER_RUNTIME", d.encoder_runtime).lower(),
            encoder_precision=env.text("ENCODER_PRECISION", d.encoder_precision).lower(),
        )


@dataclass(frozen=True)
class ServingConfig:
    """How gunicorn serves the app (gunicorn.conf.py reads these; docs/operations.md)."""

    host: str = "127.0.0.1"
    port: int = 9090
    workers: int = 1
    threads: int = 8
    timeout: int = 300  # seconds a worker may stay silent (loading SAM2, or stuck) before gunicorn replaces it
    graceful_timeout: int = 120  # seconds a stopping worker gets to finish the clicks in flight
    log_level: str = "INFO"

    @property
    def bind(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServingConfig:
        env = _Env(os.environ if env is None else env)
        d = cls()
        return env.build(
            cls,
            host=env.text("HOST", d.host),
            port=env.number("PORT", d.port, maximum=65535),
            workers=env.number("WORKERS", d.workers),
            threads=env.number("THREADS", d.threads),
            timeout=env.number("TIMEOUT", d.timeout, minimum=0),
            graceful_timeout=env.number("GRACEFUL_TIMEOUT", d.graceful_timeout, minimum=0),
            log_level=env.text("LOG_LEVEL", d.log_level).upper(),
        )

    def __post_init__(self):
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL={self.log_level!r} must be one of {', '.join(LOG_LEVELS)}")


def _without_userinfo(url: str) -> str:
    """The URL for messages: a user and password written into it are secrets, shown as ***."""
    return re.sub(r"(?<=//)[^/?#]*@", "***@", url)
