"""Start-up checks: what the environment must give the backend before any worker loads SAM2.

`check_environment` finds every problem of a configuration at once (a missing checkpoint, a
MODEL_CONFIG sam2 does not ship, a DEVICE torch cannot use, a CACHE_DIR or MODEL_DIR the
process cannot write) and raises one `ConfigError` with a line per problem, each naming the
setting, the real paths and the remedy. gunicorn.conf.py runs it once in gunicorn's master
process, so a bad configuration stops the start before any worker exists; `report` is how
those lines are printed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from .config import UNTRAINED, ConfigError, ServerConfig, checkpoint_file
from .settings import POSTGRES_SCHEMES, PostgresSettingsStore, SettingsUnavailable

__all__ = ["check_environment", "checkpoint_problem", "report", "workers_warning"]

PREFIX = "sam2plus: configuration error: "


def check_environment(config: ServerConfig) -> None:
    """Raise a ConfigError listing every problem of `config` on this machine; nothing when it can start."""
    problems = [
        problem
        for problem in (
            checkpoint_problem(config.model_checkpoint, config.checkpoint_dir),
            _model_config_problem(config.model_config),
            _device_problem(config.device),
            _writable_problem("CACHE_DIR", config.cache_dir),
            _writable_problem("MODEL_DIR", config.model_dir),
            _settings_problem(config.settings_url),
        )
        if problem
    ]
    if problems:
        raise ConfigError(*problems)


def report(error: ConfigError, stream: TextIO | None = None) -> None:
    """Print each problem of `error` as one line, without a traceback."""
    stream = stream or sys.stderr
    for problem in error.problems:
        print(PREFIX + problem.replace("\n", " "), file=stream)
    stream.flush()


def checkpoint_problem(checkpoint: str, checkpoint_dir: str) -> str | None:
    """What is wrong with MODEL_CHECKPOINT in CHECKPOINT_DIR, with the command that fetches it, or None."""
    path = checkpoint_file(checkpoint, checkpoint_dir)
    if path is None or path.is_file():
        return None
    if path.exists():
        return f"SAM2 checkpoint {path} is not a file (MODEL_CHECKPOINT={checkpoint})"
    return (
        f"SAM2 checkpoint {path} not found (MODEL_CHECKPOINT={checkpoint}, "
        f"CHECKPOINT_DIR={checkpoint_dir}): download it with "
        f"`python scripts/download-checkpoints.py {path.parent} {path.name}`, or set "
        f"MODEL_CHECKPOINT={UNTRAINED} for a plumbing check with random weights"
    )


def _model_config_problem(name: str) -> str | None:
    """sam2 composes its configs by name from inside its package (hydra's pkg://sam2)."""
    spec = importlib.util.find_spec("sam2")
    if spec is None or not spec.submodule_search_locations:
        return "the sam2 package is not installed (scripts/install.sh installs it)"
    root = Path(list(spec.submodule_search_locations)[0])
    if (root / name).is_file() or (root / f"{name}.yaml").is_file():
        return None
    shipped = sorted(p.relative_to(root).as_posix() for p in (root / "configs").glob("sam2*/sam2*_hiera_*.yaml"))
    return f"MODEL_CONFIG={name} is not a config sam2 ships; one of: {', '.join(shipped)}"


def _device_problem(device: str) -> str | None:
    if not device.startswith("cuda"):
        return None
    count = _cuda_devices()
    index = int(device.partition(":")[2] or 0) if device.partition(":")[2].isdigit() else 0
    if count == 0:
        return f"DEVICE={device} but torch sees no CUDA device: set DEVICE=cpu, or auto to use a GPU when there is one"
    if index >= count:
        return f"DEVICE={device} but torch sees {count} CUDA device(s) (cuda:0 to cuda:{count - 1})"
    return None


def _cuda_devices() -> int:
    """How many CUDA devices torch sees. Asked in a child process when this one has not imported
    torch yet: gunicorn's master must not initialise CUDA before it forks its workers."""
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    probe = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    try:
        return int(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


def _writable_problem(name: str, directory: str) -> str | None:
    """Create `directory` if needed and write a file into it (and remove it again)."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".sam2plus-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return (
            f"{name}={directory} is not a writable directory ({exc.strerror or exc}): create it and give the "
            f"backend's user (uid {os.getuid()}) write access, or point {name} elsewhere"
        )
    return None


def _settings_problem(url: str | None) -> str | None:
    """A PostgreSQL SETTINGS_URL must be reachable at start; its schema is created here."""
    if not url or not url.startswith(POSTGRES_SCHEMES):
        return None
    try:
        PostgresSettingsStore(url).prepare()
    except SettingsUnavailable as exc:
        return f"{exc}: start PostgreSQL, or correct SETTINGS_URL (user, password, host, port, database)"
    return None


def workers_warning(workers: int, device: str) -> str | None:
    """A warning for WORKERS > 1 on a CUDA device: each worker holds its own SAM2 and embedding
    cache in GPU memory (a task's clicks spread over the workers read the embedding store, or run
    the encoder again where it is off)."""
    if workers <= 1 or device == "cpu":
        return None
    if device == "auto" and _cuda_devices() == 0:
        return None
    return (
        f"WORKERS={workers} on a CUDA device: each worker loads its own SAM2 on the GPU and keeps its own "
        "embedding cache there, and a task's clicks that land on another worker read the embedding store "
        "(or, with EMBEDDING_STORE_MB=0, run the encoder again); prefer WORKERS=1 with THREADS for "
        "concurrency, one replica per GPU, unless the GPU has memory to spare (docs/scaling-out.md)"
    )
