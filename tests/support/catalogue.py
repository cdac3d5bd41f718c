"""The bad-input catalogue: malformed requests over every route and what the backend answers to each.

It is the docs' troubleshooting table (docs/operations.md, Operations > Bad requests and what they
mean): tests/regular/test_catalogue.py sends every case to the backend and checks that table
against `markdown_table()`; `python -m tests.support.catalogue` writes it there.

Each case is sent to a backend configured with `SETTINGS` (small limits so that the cases stay
small; basic auth on, every case but one sending the right credentials), with the `Images`
hosts on loopback: a static server holding the files of `write_images` and two that never answer.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.docs import section
from tests.support.inprocess import predict_body
from tests.support.scenes import DiscScene, label_config, point_context, rect_context

TABLE_HEADING = "### Bad requests and what they mean"
SCENE = DiscScene(1600, 1200, 700, 500, 120)
PROJECT = "12.1795599678"
USER, PASSWORD = "catalogue", "s3cret-catalogue"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
SETTINGS = {  # environment variables, as gunicorn's workers read them
    "MAX_REQUEST_BYTES": str(1 << 20),
    "MAX_IMAGE_PIXELS": "4000000",
    "MAX_IMAGE_BYTES": "3000000",
    "FETCH_TIMEOUT": "1",
    "MAX_TASKS": "10",
    "MAX_PROMPT_POINTS": "50",
    "MAX_JSON_DEPTH": "32",
    "MAX_JSON_ITEMS": "100000",
    "BASIC_AUTH_USER": USER,
    "BASIC_AUTH_PASS": PASSWORD,
    "ARTIFACTS": "off",
}


@dataclass(frozen=True)
class Images:
    """Where the cases' images are: `host` serves `write_images`' files; `silent` (an image host)
    and `label_studio` (LABEL_STUDIO_URL's) never answer."""

    host: str
    silent: str
    label_studio: str


@dataclass(frozen=True)
class Case:
    route: str  # "POST /predict"
    what: str  # what is wrong, as the docs say it
    status: int
    field: str  # the error message starts with it, then ":"
    body: Callable[[Images], dict | bytes | None] = lambda images: None  # JSON (dict or list) or raw bytes
    auth: bool = True
    query: str = ""

    @property
    def method(self) -> str:
        return self.route.split()[0]

    @property
    def path(self) -> str:
        return self.route.split()[1] + self.query


def write_images(folder: Path) -> None:
    """The image host's files: a good scene, and the bad ones the cases name."""
    folder.mkdir(parents=True, exist_ok=True)
    SCENE.write(folder / "scene.jpg")
    data = (folder / "scene.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "page.jpg").write_bytes(b"<!doctype html><html><body>Sign in</body></html>")
    Image.new("1", (30000, 30000)).save(folder / "bomb.png", optimize=True)  # 900 MP in ~110 KB
    Image.new("RGB", (2500, 2000), (90, 90, 90)).save(folder / "large.jpg")  # 5 MP
    noise = np.random.default_rng(9).integers(0, 256, (1100, 1000, 3), np.uint8)
    Image.fromarray(noise).save(folder / "heavy.png")  # ~3.3 MB


@contextlib.contextmanager
def silent_host():
    """A loopback server that accepts connections and never answers; yields "127.0.0.1:port"."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept():
        while not stopping.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        listener.close()
        for connection in held:
            connection.close()


def _click(images: Images, image: str | None = None, context=None, fmt: str = "BrushLabels", **changes) -> dict:
    """A /predict body for a click on the catalogue's project, with `changes` replacing its keys."""
    return predict_body(fmt, context, image or f"http://{images.host}/scene.jpg", **{"project": PROJECT, **changes})


def _region(**value) -> dict:
    """A context of one region: keypointlabels unless `type` is given; `value` replaces its value."""
    kind = value.pop("type", "keypointlabels")
    region = point_context([(SCENE.cx, SCENE.cy)], SCENE.width, SCENE.height)["result"][0]
    return {"result": [{**region, "type": kind, "value": value}]}


def _rectangle(**changes) -> dict:
    context = rect_context(SCENE.box(), SCENE.width, SCENE.height)
    context["result"][0]["value"].update(changes)
    return context


def _deep(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def _raw(text: str) -> bytes:
    return text.encode()


def _setup(extra_params, **changes) -> dict:
    return {"project": PROJECT, "schema": label_config(), "extra_params": extra_params, **changes}


def _task(images: Images, task) -> dict:
    return _click(images, tasks=[task])


CATALOGUE: tuple[Case, ...] = (
    # bodies
    Case("POST /predict", "body is not JSON", 400, "body", lambda i: b"{tasks: [1]"),
    Case("POST /predict", "body is a JSON array, not an object", 400, "body", lambda i: [1, 2]),
    Case("POST /predict", "body is JSON null", 400, "body", lambda i: b"null"),
    Case("POST /predict", "body is not UTF-8", 400, "body", lambda i: b'{"tasks": "\xff\xfe"}'),
    Case("POST /predict", "body nested deeper than MAX_JSON_DEPTH", 400, "body", lambda i: _click(i, tasks=_deep(40))),
    Case("POST /predict", "ten thousand brackets", 400, "body", lambda i: b"[" * 10_000),
    Case("POST /predict", "body larger than MAX_REQUEST_BYTES", 413, "body", lambda i: _click(i, note="x" * (1 << 20))),
    Case(
        "POST /predict",
        "more arrays, objects and commas than MAX_JSON_ITEMS (counted before parsing)",
        413,
        "body",
        lambda i: _click(i, tasks=[{}] * 60_000),
    ),
    Case(
        "POST /predict",
        "a string with a lone surrogate (`\\ud800`)",
        400,
        "tasks[0].data.image",
        lambda i: _raw(json.dumps(_click(i, f"http://{i.host}/scene\ud800.jpg"))),
    ),
    Case(
        "POST /setup",
        "a key with a lone surrogate",
        400,
        "extra_params.subpatching.\\udfff",
        lambda i: _raw(json.dumps(_setup({"subpatching": {"\udfff": 1}}))),
    ),
    Case("POST /setup", "body is not JSON", 400, "body", lambda i: b"project=1"),
    Case("POST /webhook", "body is a JSON array", 400, "body", lambda i: [{"action": "ANNOTATION_CREATED"}]),
    # tasks and their data
    Case("POST /predict", "no `tasks`", 400, "tasks", lambda i: {k: v for k, v in _click(i).items() if k != "tasks"}),
    Case("POST /predict", "`tasks` is an object, not a list", 400, "tasks", lambda i: _click(i, tasks={"id": 1})),
    Case("POST /predict", "`tasks` is empty", 400, "tasks", lambda i: _click(i, tasks=[])),
    Case(
        "POST /predict",
        "more tasks than MAX_TASKS",
        413,
        "tasks",
        lambda i: _click(i, tasks=[{"id": n, "data": {}} for n in range(11)]),
    ),
    Case("POST /predict", "a task is a string", 400, "tasks[0].data.image", lambda i: _task(i, "task-1")),
    Case("POST /predict", "a task without `data`", 400, "tasks[0].data.image", lambda i: _task(i, {"id": 1})),
    Case(
        "POST /predict",
        "the image value is a number",
        400,
        "tasks[0].data.image",
        lambda i: _task(i, {"id": 1, "data": {"image": 17}}),
    ),
    Case("POST /predict", "`project` is an object", 400, "project", lambda i: _click(i, project={"id": 12})),
    Case(
        "POST /predict",
        "`project` longer than 128 characters",
        400,
        "project",
        lambda i: _click(i, project="12." + "9" * 5000),
    ),
    Case("POST /predict", "`params` is a string", 400, "params", lambda i: _click(i, params="context")),
    # contexts, regions and coordinates
    Case("POST /predict", "`context` is a list", 400, "context", lambda i: _click(i, params={"context": [1]})),
    Case(
        "POST /predict",
        "`context.result` is a string",
        400,
        "context.result",
        lambda i: _click(i, params={"context": {"result": "click"}}),
    ),
    Case(
        "POST /predict",
        "a region is a number",
        400,
        "context.result[0]",
        lambda i: _click(i, params={"context": {"result": [5]}}),
    ),
    Case(
        "POST /predict",
        "a region without `value`",
        400,
        "context.result[0]",
        lambda i: _click(i, params={"context": {"result": [{"type": "keypointlabels"}]}}),
    ),
    Case(
        "POST /predict",
        "a region type that is no prompt (polygon)",
        400,
        "context.result[0].type",
        lambda i: _click(i, context=_region(type="polygonlabels", x=5, y=5)),
    ),
    Case(
        "POST /predict",
        "a keypoint's x is a string",
        400,
        "context.result[0].value.x",
        lambda i: _click(i, context=_region(x="12%", y=5)),
    ),
    Case(
        "POST /predict",
        "a keypoint's x is NaN",
        400,
        "context.result[0].value.x",
        lambda i: _raw(json.dumps(_click(i, context=_region(x=float("nan"), y=5)))),
    ),
    Case(
        "POST /predict",
        "a keypoint outside the image (x = 150 %)",
        400,
        "context.result[0].value.x",
        lambda i: _click(i, context=_region(x=150, y=5)),
    ),
    Case(
        "POST /predict",
        "only negative keypoints",
        400,
        "context.result",
        lambda i: _click(i, context=point_context([(700, 500)], SCENE.width, SCENE.height, positive=[False])),
    ),
    Case(
        "POST /predict",
        "more keypoints than MAX_PROMPT_POINTS",
        413,
        "context.result",
        lambda i: _click(i, context=point_context([(700, 500)] * 51, SCENE.width, SCENE.height)),
    ),
    Case(
        "POST /predict",
        "a rectangle of width 0",
        400,
        "context.result[0].value.width",
        lambda i: _click(i, context=_rectangle(width=0)),
    ),
    Case(
        "POST /predict",
        "a rotated rectangle",
        400,
        "context.result[0].value.rotation",
        lambda i: _click(i, context=_rectangle(rotation=30)),
    ),
    Case(
        "POST /predict",
        "a rectangle entirely past the image's edge",
        400,
        "context.result[0].value",
        lambda i: _click(i, context=_rectangle(x=100, width=5)),
    ),
    # label configs
    Case("POST /predict", "no `label_config`", 400, "label_config", lambda i: _click(i, label_config=None)),
    Case("POST /predict", "`label_config` is not XML", 400, "label_config", lambda i: _click(i, label_config="<View")),
    Case(
        "POST /predict",
        "`label_config` lacks the output tag of the return format",
        400,
        "label_config",
        lambda i: _click(i, label_config=label_config("PolygonLabels")),
    ),
    Case(
        "POST /predict",
        "the output tag names no image",
        400,
        "label_config",
        lambda i: _click(i, label_config='<View><BrushLabels name="o" toName="nothing"/></View>'),
    ),
    Case(
        "POST /predict",
        "`label_config` with a DOCTYPE (entities)",
        400,
        "label_config",
        lambda i: _click(i, label_config='<!DOCTYPE View [<!ENTITY a "aaaa">]>' + label_config()),
    ),
    # extra_params and /setup
    Case("POST /setup", "no `project`", 400, "project", lambda i: {"schema": label_config(), "extra_params": None}),
    Case(
        "POST /setup", "`project` longer than 128 characters", 400, "project", lambda i: _setup(None, project="x" * 129)
    ),
    Case(
        "POST /setup",
        "`schema` with a DOCTYPE",
        400,
        "schema",
        lambda i: _setup(None, schema="<!DOCTYPE View>" + label_config()),
    ),
    Case(
        "POST /setup",
        "`extra_params` a JSON string longer than 65536 characters",
        400,
        "extra_params",
        lambda i: _setup(json.dumps({"subpatching": {"mode": "x" * 70_000}})),
    ),
    Case("POST /setup", "`extra_params` is a list", 400, "extra_params", lambda i: _setup([1])),
    Case("POST /setup", "`extra_params` is a string that is not JSON", 400, "extra_params", lambda i: _setup("{x")),
    Case("POST /setup", "an unknown key", 400, "extra_params.patch_size", lambda i: _setup({"patch_size": 512})),
    Case("POST /setup", "a section is a number", 400, "extra_params.subpatching", lambda i: _setup({"subpatching": 1})),
    Case(
        "POST /setup",
        "`patch_size` past 8192",
        400,
        "extra_params.subpatching.patch_size",
        lambda i: _setup({"subpatching": {"patch_size": [30000, 30000]}}),
    ),
    Case(
        "POST /setup",
        "`epsilon` is NaN",
        400,
        "extra_params.return_format.epsilon",
        lambda i: _raw(
            json.dumps(
                _setup(
                    {"return_format": {"type": "PolygonLabels", "epsilon": float("nan")}},
                    schema=label_config("PolygonLabels"),
                )
            )
        ),
    ),
    Case(
        "POST /setup",
        "two mistakes (both are named)",
        400,
        "extra_params.postprocess.dilate",
        lambda i: _setup({"postprocess": {"dilate": 9999}, "return_format": {"type": "Brushlabel"}}),
    ),
    Case(
        "POST /setup",
        "the schema lacks the output tag",
        400,
        "schema",
        lambda i: _setup({"return_format": {"type": "PolygonLabels"}}),
    ),
    # images
    Case(
        "POST /predict",
        "the image host answers 404",
        422,
        "tasks[0].data.image",
        lambda i: _click(i, f"http://{i.host}/missing.jpg"),
    ),
    Case(
        "POST /predict",
        "the image host never answers (FETCH_TIMEOUT)",
        422,
        "tasks[0].data.image",
        lambda i: _click(i, f"http://{i.silent}/scene.jpg"),
    ),
    Case(
        "POST /predict",
        "Label Studio never answers (FETCH_TIMEOUT)",
        422,
        "tasks[0].data.image",
        lambda i: _click(i, "/data/upload/1/scene.jpg"),
    ),
    Case(
        "POST /predict",
        "the image is an HTML page",
        422,
        "tasks[0].data.image",
        lambda i: _click(i, f"http://{i.host}/page.jpg"),
    ),
    Case(
        "POST /predict",
        "a truncated JPEG",
        422,
        "tasks[0].data.image",
        lambda i: _click(i, f"http://{i.host}/truncated.jpg"),
    ),
    Case(
        "POST /predict",
        "a decompression bomb (a 110 KB PNG of 30000x30000)",
        413,
        "tasks[0].data.image",
        lambda i: _click(i, f"http://{i.host}/bomb.png"),
    ),
    Case(
        "POST /predict",
        "more pixels than MAX_IMAGE_PIXELS",
        413,
        "tasks[0].data.image",
        lambda i: _click(i, f"http://{i.host}/large.jpg"),
    ),
    Case(
        "POST /predict",
        "a download larger than MAX_IMAGE_BYTES",
        413,
        "tasks[0].data.image",
        lambda i: _click(i, f"http://{i.host}/heavy.png"),
    ),
    Case(
        "POST /predict",
        "a host not in IMAGE_HOSTS",
        400,
        "tasks[0].data.image",
        lambda i: _click(i, "http://images.example.invalid/scene.jpg"),
    ),
    Case("POST /predict", "a file outside CACHE_DIR", 400, "tasks[0].data.image", lambda i: _click(i, "/etc/passwd")),
    Case(
        "POST /predict",
        "a `data:` URL that is not base64",
        400,
        "tasks[0].data.image",
        lambda i: _click(i, "data:text/plain,hello"),
    ),
    Case(
        "POST /predict",
        "artifacts asked of a server with ARTIFACTS=off",
        400,
        "artifacts",
        lambda i: _click(i, artifacts=True),
    ),
    # other routes
    Case("GET /versions", "no basic-auth credentials", 401, "authorization", auth=False),
    Case("GET /metrics", "an unknown format", 400, "format", query="?format=xml"),
    Case("GET /predict", "the wrong method", 405, "GET /predict"),
    Case("POST /health", "the wrong method", 405, "POST /health", lambda i: {}),
    Case("XYZ /health", "a made-up method (counted in the metrics as `other`)", 405, "XYZ /health"),
    Case("GET /train", "a route that does not exist", 404, "GET /train"),
)


def markdown_table() -> str:
    """The catalogue as the docs' table."""
    lines = ["| request | what is wrong | answer | the error names |", "| --- | --- | --- | --- |"]
    for case in CATALOGUE:
        lines.append(f"| `{case.route}{case.query}` | {case.what} | {case.status} | `{case.field}` |")
    return "\n".join(lines)


def write_table() -> Path:
    """Replace the table under "### Bad requests and what they mean" with `markdown_table()`; the page."""
    where = section(TABLE_HEADING)
    body = where.text.splitlines(keepends=True)
    rows = [i for i, line in enumerate(body) if line.startswith("|")]
    assert rows, f"{where.path}: no table under {TABLE_HEADING!r}"
    new = body[: rows[0]] + [markdown_table() + "\n"] + body[rows[-1] + 1 :]
    text = where.path.read_text()
    where.path.write_text(text[: where.start] + "".join(new) + text[where.end :])
    return where.path


if __name__ == "__main__":
    print(f"wrote the table into {write_table()}")
