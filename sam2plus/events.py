"""The interactive event protocol of HumanSignal's `segment_anything_video_interactive` example.

That backend (label-studio-ml-backend PR #893 and its follow-ups) routes everything through
`/predict` with `context.event`, mirroring the in-browser SAM tag of Label Studio's Enterprise
edition: `capabilities` (task-agnostic: the prompts and output tags the backend serves),
`prewarm` (prepare a task before its first click), `predict` (a click: `context.result` as the
classic context has it) and `release` (drop what is cached for a task), plus video tracking
events. Every answer is the usual `{"results": [{"result": [...]}]}`, its one region of type
`<event>_ack` (or `capabilities`) carrying the reply in `value`.

A context without `event` is the classic one that Label Studio 1.23.2 sends, untouched.
`parse_event` reads the event once, where the request is parsed; video events and unknown
events are refused with a 400 naming them.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import OrderedDict
from typing import Any

from .errors import RequestError, describe
from .params import RETURN_TYPES

__all__ = [
    "EVENTS",
    "VIDEO_EVENTS",
    "OUTPUTS",
    "PROMPTS",
    "TaskImages",
    "parse_event",
    "capabilities_region",
    "ack_region",
]

EVENTS = ("capabilities", "prewarm", "predict", "release")
# What the example serves for <Video> tasks only; SAM2Plus segments images.
VIDEO_EVENTS = ("track", "track_progress", "track_cancel")
PROMPTS = ("point", "box")
# Each output tag and the geometry it gets, in the example's vocabulary.
OUTPUTS = {
    "BrushLabels": "mask",
    "Brush": "mask",
    "BitmaskLabels": "mask",
    "Bitmask": "mask",
    "PolygonLabels": "polygon",
    "Polygon": "polygon",
    "RectangleLabels": "bbox",
    "Rectangle": "bbox",
}
assert set(OUTPUTS) == set(RETURN_TYPES), "every return format is a capability"


def parse_event(context: Any) -> str | None:
    """`context.event`: None for the classic context (no `event` key, or no context at all), else
    one of EVENTS; a video event or any other value is a RequestError naming it."""
    if not isinstance(context, dict) or "event" not in context:
        return None
    event = context["event"]
    if event in EVENTS:
        return event
    if event in VIDEO_EVENTS:
        raise RequestError(
            "context.event",
            f"{describe(event)} is a video event; SAM2Plus segments images (events: {', '.join(EVENTS)})",
        )
    raise RequestError("context.event", f"must be one of {', '.join(EVENTS)}, got {describe(event)}")


def capabilities_region(model_version: str) -> dict:
    """The `capabilities` reply: the prompts SAM2Plus takes and every output tag it can fill."""
    return {
        "id": uuid.uuid4().hex[:8],
        "type": "capabilities",
        "origin": "manual",
        "value": {
            "prompts": list(PROMPTS),
            "targets": [{"tag": tag, "output": output} for tag, output in OUTPUTS.items()],
            "model_info": {"name": "SAM2Plus", "version": model_version},
        },
    }


def ack_region(event: str, value: dict, from_name: str = "", to_name: str = "") -> dict:
    """The `<event>_ack` region an event is answered with."""
    return {
        "id": uuid.uuid4().hex[:8],
        "from_name": from_name,
        "to_name": to_name,
        "type": f"{event}_ack",
        "origin": "manual",
        "value": value,
    }


class TaskImages:
    """Which image content (digest) a task's image value turned out to be, for the most recent
    `max_items` values: what `release` needs to find a task's frames and embeddings without
    fetching its image again. One per process; safe across threads."""

    def __init__(self, max_items: int = 4096):
        self.max_items = max_items
        self._digests: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def note(self, value: str, digest: str) -> None:
        key = _key(value)
        with self._lock:
            self._digests[key] = digest
            self._digests.move_to_end(key)
            while len(self._digests) > self.max_items:
                self._digests.popitem(last=False)

    def digest(self, value: str) -> str | None:
        with self._lock:
            return self._digests.get(_key(value))


def _key(value: str) -> bytes:
    """A value by its hash: a data: URL is megabytes."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()
