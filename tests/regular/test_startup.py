"""Start-up: a configuration the backend cannot serve with stops it with one clear line per problem,
no traceback and a non-zero exit status, printed once by gunicorn's master (not once per worker),
with the real paths in the hint (issue 9). gunicorn.conf.py takes its serving settings from the
environment.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from sam2plus.config import ConfigError, ServerConfig, ServingConfig
from sam2plus.startup import PREFIX, check_environment, checkpoint_problem, report
from tests.support.servers import GUNICORN, REPO, TEST_MODEL, free_port


def _config(tmp_path, **settings) -> ServerConfig:
    values = {
        "device": "cpu",
        "model_config": "configs/sam2.1/sam2.1_hiera_t.yaml",
        "model_checkpoint": "untrained",
        "cache_dir": str(tmp_path / "cache"),
        "model_dir": str(tmp_path / "models"),
    }
    return ServerConfig(**{**values, **settings})


def _problems(config) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as failure:
        check_environment(config)
    return failure.value.problems


def test_a_good_configuration_passes_and_creates_its_folders(tmp_path):
    check_environment(_config(tmp_path))
    assert (tmp_path / "cache").is_dir() and (tmp_path / "models").is_dir()
    assert not list((tmp_path / "cache").iterdir()), "the write check leaves nothing behind"


def test_a_missing_checkpoint_names_the_real_path_and_the_command_that_fetches_it(tmp_path):
    config = _config(tmp_path, model_checkpoint="sam2.1_hiera_tiny.pt", checkpoint_dir=str(tmp_path / "ckpts"))
    (problem,) = _problems(config)
    assert problem.startswith(f"SAM2 checkpoint {tmp_path / 'ckpts' / 'sam2.1_hiera_tiny.pt'} not found")
    assert f"`python scripts/download-checkpoints.py {tmp_path / 'ckpts'} sam2.1_hiera_tiny.pt`" in problem
    assert "CHECKPOINT_DIR NAME" not in problem and "MODEL_CHECKPOINT=untrained" in problem


def test_an_absolute_checkpoint_path_is_taken_as_it_is(tmp_path):
    given = tmp_path / "mine" / "model.pt"
    assert f"SAM2 checkpoint {given} not found" in checkpoint_problem(str(given), "/elsewhere")
    given.parent.mkdir()
    given.write_bytes(b"weights")
    assert checkpoint_problem(str(given), "/elsewhere") is None


def test_a_model_config_sam2_does_not_ship_lists_those_it_does(tmp_path):
    (problem,) = _problems(_config(tmp_path, model_config="configs/sam2.1/sam2.1_hiera_xl.yaml"))
    assert problem.startswith("MODEL_CONFIG=configs/sam2.1/sam2.1_hiera_xl.yaml is not a config sam2 ships")
    assert "configs/sam2.1/sam2.1_hiera_l.yaml" in problem and "configs/sam2/sam2_hiera_t.yaml" in problem


def test_a_cuda_device_on_a_machine_without_one_is_refused(tmp_path):
    import torch

    if torch.cuda.is_available():
        (problem,) = _problems(_config(tmp_path, device=f"cuda:{torch.cuda.device_count()}"))
        assert "CUDA device(s)" in problem
    else:
        (problem,) = _problems(_config(tmp_path, device="cuda"))
        assert problem.startswith("DEVICE=cuda but torch sees no CUDA device")


def test_folders_that_cannot_be_written_are_named_with_the_reason(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    problems = _problems(_config(tmp_path, cache_dir=str(blocker / "cache"), model_dir=str(blocker / "models")))
    assert [p.split(" is not")[0] for p in problems] == [
        f"CACHE_DIR={blocker / 'cache'}",
        f"MODEL_DIR={blocker / 'models'}",
    ]
    assert all("(Not a directory)" in p and f"uid {os.getuid()}" in p for p in problems)


def test_every_problem_is_found_at_once(tmp_path):
    config = _config(tmp_path, model_checkpoint="missing.pt", model_config="nope.yaml", cache_dir="/proc/cache")
    assert [p.split()[0] for p in _problems(config)] == ["SAM2", "MODEL_CONFIG=nope.yaml", "CACHE_DIR=/proc/cache"]


def test_the_environment_is_read_with_every_problem_at_once():
    with pytest.raises(ConfigError) as failure:
        ServerConfig.from_env({"DEVICE": "gpu", "MAX_TASKS": "x", "ARTIFACTS": "maybe", "BASIC_AUTH_USER": "ann"})
    assert [p.split("=")[0].split()[0] for p in failure.value.problems] == [
        "DEVICE",
        "MAX_TASKS",
        "ARTIFACTS",
        "BASIC_AUTH_USER",
    ]


def test_report_prints_one_line_per_problem():
    stream = io.StringIO()
    report(ConfigError("first", "second\nline"), stream)
    assert stream.getvalue() == f"{PREFIX}first\n{PREFIX}second line\n"


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, ServingConfig("127.0.0.1", 9090, 1, 8, 300, 120, "INFO")),
        (
            {"HOST": "0.0.0.0", "PORT": "22201", "WORKERS": "2", "THREADS": "4", "TIMEOUT": "0", "LOG_LEVEL": "debug"},
            ServingConfig("0.0.0.0", 22201, 2, 4, 0, 120, "DEBUG"),
        ),
    ],
)
def test_serving_settings(env, expected):
    assert ServingConfig.from_env(env) == expected


def test_serving_settings_are_checked_and_ipv6_hosts_bracketed():
    with pytest.raises(ConfigError) as failure:
        ServingConfig.from_env({"PORT": "70000", "WORKERS": "0", "THREADS": "-1", "LOG_LEVEL": "loud"})
    assert [p.split("=")[0] for p in failure.value.problems] == ["PORT", "WORKERS", "THREADS", "LOG_LEVEL"]
    assert ServingConfig(host="::1").bind == "[::1]:9090"


# --- the real processes --------------------------------------------------------------------------


def _start(command: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    return subprocess.run(
        command, cwd=REPO, env={**base, **TEST_MODEL, **env}, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_gunicorn_stops_with_each_problem_once_without_a_traceback(tmp_path):
    """Issue 9: a missing checkpoint was a 45-line traceback printed twice, with placeholders."""
    env = {
        "MODEL_CHECKPOINT": "sam2.1_hiera_tiny.pt",
        "CHECKPOINT_DIR": str(tmp_path / "ckpts"),
        "MODEL_CONFIG": "configs/sam2.1/sam2.1_hiera_huge.yaml",
        "CACHE_DIR": "/proc/sam2plus-cache",
        "MODEL_DIR": str(tmp_path / "models"),
        "WORKERS": "3",
        "THREADS": "nine",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
    }
    done = _start([GUNICORN, "_wsgi:app"], env)
    output = done.stdout + done.stderr
    lines = [line for line in output.splitlines() if line.startswith(PREFIX)]
    assert done.returncode == 1, output
    assert [line.removeprefix(PREFIX).split("=")[0].split()[0] for line in lines] == [
        "THREADS",
        "SAM2",
        "MODEL_CONFIG",
        "CACHE_DIR",
    ], output
    assert str(tmp_path / "ckpts" / "sam2.1_hiera_tiny.pt") in lines[1]
    assert "Traceback" not in output and "Booting worker" not in output, "no worker started"


@pytest.mark.slow
def test_gunicorn_without_options_serves_on_the_settings_of_the_environment(tmp_path):
    """`gunicorn _wsgi:app` alone, as a user's shell runs it: the port, workers and threads of the
    environment, not gunicorn's defaults (8000, one sync worker, 30 s)."""
    from tests.support.servers import start_logged, stop, wait_for

    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        TEST_MODEL,
        CACHE_DIR=str(tmp_path / "cache"),
        MODEL_DIR=str(tmp_path / "models"),
        PORT=str(port),
        WORKERS="2",
        THREADS="3",
        TIMEOUT="456",
    )
    env.pop("HOST", None)
    process = start_logged([GUNICORN, "_wsgi:app"], env, log)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", process, log, 240, "gunicorn")
        text = log.read_text()
        assert f"Listening at: http://127.0.0.1:{port}" in text, "loopback unless HOST says otherwise"
        assert "Using worker: gthread" in text and "2 worker(s) x 3 thread(s)" in text and "timeout 456 s" in text
    finally:
        stop(process)


@pytest.mark.slow
def test_the_development_server_reports_problems_the_same_way(tmp_path):
    done = _start(
        [sys.executable, "_wsgi.py"],
        {"MODEL_CONFIG": "nope.yaml", "CACHE_DIR": str(tmp_path), "MODEL_DIR": str(tmp_path)},
    )
    assert done.returncode == 4 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"{PREFIX}MODEL_CONFIG=nope.yaml is not a config sam2 ships; one of: "
        + done.stderr.split("one of: ")[1].strip()
    ]
