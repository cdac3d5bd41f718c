"""Request values reach the log only through `sam2plus.logtext.logtext`: one line each, bounded.

The rule, checked on the code (`test_every_log_call_escapes_what_it_formats`): in the backend's
modules, every call of a logger method (`log.info(...)`, `server.log.warning(...)`, ...)
  - has a string literal as its message (no f-string, no concatenation: those would format a
    value without the rule seeing it), and
  - formats only arguments that are a literal, a call of `logtext(...)` (or `*map(logtext, ...)`),
    or an expression listed in `INTERNAL` below with why it holds no request value.
A new log call that formats anything else fails here until it is escaped or listed.
"""

from __future__ import annotations

import ast
import io
import logging
from pathlib import Path

import pytest

from model import SAM2Plus
from sam2plus.config import ServerConfig
from sam2plus.logtext import LIMIT, logtext
from sam2plus.server import create_app
from tests.support.geometry_segmenter import ColorRegionSegmenter
from tests.support.inprocess import SCENE, predict_body

REPO = Path(__file__).resolve().parents[2]
LOGGED_MODULES = sorted([*REPO.glob("sam2plus/*.py"), REPO / "model.py", REPO / "_wsgi.py", REPO / "gunicorn.conf.py"])
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}
# (file, expression as ast.unparse writes it): values the backend makes itself, never a request's.
INTERNAL = {
    ("sam2plus/server.py", "exc.status"): "a status the backend chose",
    ("sam2plus/server.py", "exc"): "a Stopped, whose message is the backend's own (`stopped after <stage>`)",
    ("sam2plus/server.py", "message"): "_storage_fault's fixed messages",
    ("sam2plus/server.py", "_request_id()"): "16 hex digits the backend drew",
    ("sam2plus/server.py", "_method()"): "metrics.method_label: a closed set of methods",
    ("sam2plus/warmup.py", "len(self._jobs)"): "a count",
    ("sam2plus/warmup.py", "name"): "warmup._name: built with logtext",
    ("sam2plus/warmup.py", "job.name"): "warmup._name: built with logtext",
    ("sam2plus/warmup.py", "what"): "Pipeline.warm's summary (sizes and stage names)",
    ("sam2plus/warmup.py", "(time.perf_counter() - started) * 1000"): "a duration",
    ("sam2plus/warmup.py", "kind"): "a literal of the backend's: warm-up or prefetch",
    ("sam2plus/warmup.py", "job.kind"): "a literal of the backend's: warm-up, prefetch or look-up",
    ("sam2plus/metrics.py", "record.__name__"): "a function's name",
    ("sam2plus/metrics.py", "type(exc).__name__"): "a class name",
    ("sam2plus/metrics.py", "exc"): "prometheus-client's or the disk's error under PROMETHEUS_MULTIPROC_DIR",
    ("sam2plus/framestore.py", "width"): "a decoded image's width (an int)",
    ("sam2plus/framestore.py", "height"): "a decoded image's height (an int)",
    ("sam2plus/framestore.py", "self.directory"): "CACHE_DIR/frames, a setting",
    ("sam2plus/framestore.py", "exc"): "the disk's OSError on a path the backend named",
    ("sam2plus/fetch.py", "self.download_dir"): "CACHE_DIR/downloads, a setting",
    ("sam2plus/fetch.py", "exc"): "the disk's OSError on a path the backend named (content hashes)",
    ("sam2plus/prompts.py", "*size"): "a decoded image's size (ints)",
    ("sam2plus/pipeline.py", "frame_map.mode"): "the backend's frame mode",
    ("sam2plus/pipeline.py", "*frame_map.frame_size"): "ints",
    ("sam2plus/pipeline.py", "astuple(frame_map.window)"): "ints",
    ("sam2plus/pipeline.py", "' (reused)' if frame_map.reused else ''"): "literals",
    ("sam2plus/pipeline.py", "'encoded' if output.encoded else 'cached embedding'"): "literals",
    ("sam2plus/pipeline.py", "len(result)"): "a count",
    ("sam2plus/pipeline.py", "', '.join((f'{name} {ms:.0f}' for name, ms in clock.laps.items()))"): "stage timings",
    ("sam2plus/segmenter.py", "model_config"): "MODEL_CONFIG, a setting checked at start",
    ("sam2plus/segmenter.py", "device"): "DEVICE, a setting",
    ("sam2plus/segmenter.py", "time.perf_counter() - started"): "a duration",
    (
        "sam2plus/segmenter.py",
        "' with UNTRAINED random weights: masks are meaningless' if self.untrained else ''",
    ): "literals",
    ("model.py", "'stock' if params.is_stock else logtext(params.source)"): "a literal or logtext",
    ("gunicorn.conf.py", "workers"): "WORKERS, a setting",
    ("gunicorn.conf.py", "threads"): "THREADS, a setting",
    ("gunicorn.conf.py", "', '.join(server.cfg.bind)"): "HOST and PORT, settings",
    ("gunicorn.conf.py", "server.cfg.timeout or 'off'"): "TIMEOUT, a setting",
    ("gunicorn.conf.py", "os.environ[_MULTIPROC]"): "PROMETHEUS_MULTIPROC_DIR, a setting",
    ("gunicorn.conf.py", "warning"): "startup.workers_warning's fixed text with WORKERS and DEVICE, settings",
}


def _is_log_call(node: ast.AST) -> bool:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LOG_METHODS):
        return False
    receiver = node.func.value
    return (isinstance(receiver, ast.Name) and receiver.id == "log") or (
        isinstance(receiver, ast.Attribute) and receiver.attr == "log"
    )


def _escaped(argument: ast.expr) -> bool:
    if isinstance(argument, ast.Constant):
        return True
    if isinstance(argument, ast.Call) and isinstance(argument.func, ast.Name) and argument.func.id == "logtext":
        return True
    if isinstance(argument, ast.Starred) and isinstance(argument.value, ast.Call):
        call = argument.value  # *map(logtext, values)
        return isinstance(call.func, ast.Name) and call.func.id == "map" and ast.unparse(call.args[0]) == "logtext"
    return False


def log_call_problems(path: Path) -> list[str]:
    """Every argument of a logging call in `path` that breaks the rule (module docstring)."""
    name = path.relative_to(REPO).as_posix()
    problems = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not _is_log_call(node):
            continue
        message, *arguments = node.args
        if not (isinstance(message, ast.Constant) and isinstance(message.value, str)):
            problems.append(f"{name}:{node.lineno}: the message is not a string literal: {ast.unparse(message)}")
        for argument in arguments:
            if not _escaped(argument) and (name, ast.unparse(argument)) not in INTERNAL:
                problems.append(f"{name}:{node.lineno}: formats {ast.unparse(argument)} without logtext")
    return problems


def test_every_log_call_escapes_what_it_formats():
    calls = sum(
        _is_log_call(node) for path in LOGGED_MODULES for node in ast.walk(ast.parse(path.read_text(), str(path)))
    )
    assert calls >= 15, "the rule sees the backend's logging calls"
    problems = [problem for path in LOGGED_MODULES for problem in log_call_problems(path)]
    assert problems == []


def test_the_rule_catches_raw_values_and_f_strings(tmp_path):
    bad = REPO / "sam2plus" / "_logtext_rule_probe.py"
    source = 'log.info("project %r", project)\nlog.warning(f"task {task}")\nlog.info("%s", logtext(project))\n'
    try:
        bad.write_text(source)
        problems = log_call_problems(bad)
    finally:
        bad.unlink()
    assert len(problems) == 2 and "formats project" in problems[0] and "not a string literal" in problems[1]


FORGED = "\n[2026-01-01 00:00:00 +0000] [ERROR] [sam2plus.server] forged\x1b[31m"


def test_logtext_gives_one_bounded_printable_line():
    for value in (FORGED, "\ud800", "\u2028\u202e", {"k\n": ["\x00"]}, ValueError("a\nb"), b"x\n", 10**5000):
        text = logtext(value)
        assert text.isprintable() and len(text) < LIMIT + 40, text
    assert logtext("x" * 10_000).endswith("... (10000 characters)")
    assert logtext("é 日本") == "'é 日本'"  # readable text stays readable


@pytest.fixture
def served(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    SCENE.write(cache / "scene.jpg")
    model = SAM2Plus(
        ServerConfig(cache_dir=str(cache), model_dir=str(tmp_path / "models")), segmenter=ColorRegionSegmenter()
    )
    return model, create_app(model).test_client()


def test_request_values_with_newlines_escapes_and_surrogates_are_one_log_line_each(served):
    """A task id, project, image URL, label, webhook action and context size carrying a newline, an
    ANSI escape or a lone surrogate, through the warm-up (no context) and the error paths."""
    model, client = served
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("REC %(name)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        opening = predict_body(tasks=[{"id": "1" + FORGED, "data": {"image": "missing" + FORGED + ".jpg"}}])
        opening["project"] = "7" + FORGED
        opening["params"]["context"] = None
        assert client.post("/predict", json=opening).status_code == 200
        assert model.warmup.wait(30) and model.warmup.failed == 1
        click = predict_body(image="http://images.example.invalid/x" + FORGED)
        assert client.post("/predict", json=click).status_code == 400
        click = predict_body(project="7" + FORGED + "\ud800")
        assert client.post("/predict", json=click).status_code == 400
        click = predict_body()
        click["params"]["context"]["result"][0]["value"]["rectanglelabels"] = ["obj" + FORGED]
        click["params"]["context"]["result"][0]["original_width"] = 99
        assert client.post("/predict", json=click).status_code in (200, 400)
        assert client.post("/webhook", json={"action": "A" + FORGED}).status_code == 200
        assert client.post("/setup", json={"project": "7" + FORGED, "extra_params": {FORGED: 1}}).status_code == 400
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 6
    assert all(line.startswith("REC ") for line in lines), [line for line in lines if not line.startswith("REC ")]
    assert all(line.isprintable() for line in lines)
    for what in ("warm-up failed", "webhook", "POST '/setup'", "POST '/predict'"):
        assert any(what in line and "\\n[2026" in line for line in lines), what  # escaped, on its line
