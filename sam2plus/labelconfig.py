"""The label config's output control for the configured return format, and its image.

Parsed controls are cached by the SHA-256 of the config, so the cache never holds a config
itself (a config may be megabytes), and the cache is bounded in bytes.
"""

from __future__ import annotations

import hashlib
import re
import sys
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass

from .errors import RequestError

__all__ = ["CACHE_MAX_BYTES", "OutputControl", "ControlCache", "CONTROLS", "find_output_control"]

CACHE_MAX_BYTES = 1 << 20
# A document type declaration, the only place entities are declared: refused before the XML parser
# sees it (nested internal entities expand a megabyte of config into tens of megabytes of labels).
_DOCTYPE = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


@dataclass(frozen=True)
class OutputControl:
    """Where results go: the control tag's name, the image it targets and the task data key."""

    tag: str
    from_name: str
    to_name: str
    image_key: str
    labels: tuple[str, ...]

    @property
    def nbytes(self) -> int:
        """About what this control holds in memory (its strings and itself)."""
        strings = (self.tag, self.from_name, self.to_name, self.image_key, *self.labels)
        return sys.getsizeof(self) + sys.getsizeof(self.labels) + sum(sys.getsizeof(s) for s in strings)


class ControlCache:
    """Least recently used output controls by (config digest, return type), at most `max_bytes`."""

    ENTRY_OVERHEAD = 200  # the key (a 32-byte digest and the type) and the dict slot

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple[bytes, str], OutputControl] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[bytes, str]) -> OutputControl | None:
        with self._lock:
            control = self._entries.get(key)
            if control is not None:
                self._entries.move_to_end(key)
            return control

    def put(self, key: tuple[bytes, str], control: OutputControl) -> None:
        cost = control.nbytes + self.ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = control
            self.bytes += cost
            while self.bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= evicted.nbytes + self.ENTRY_OVERHEAD


CONTROLS = ControlCache(CACHE_MAX_BYTES)


def find_output_control(label_config: str, return_type: str, field: str = "label_config") -> OutputControl:
    """The `<return_type name=... toName=...>` tag of the config (tag names match case-insensitively).

    A config with a DOCTYPE or ENTITY declaration is refused before it is parsed.
    A tag without smart="true" is preferred: when the prompt and the output share a tag type
    (a smart RectangleLabels prompt, a RectangleLabels output), the output is the plain one.
    """
    if not isinstance(label_config, str) or not label_config.strip():
        raise RequestError(field, "missing: the project's label config is needed to place results")
    declaration = _DOCTYPE.search(label_config)
    if declaration:
        raise RequestError(
            field,
            f"has a <!{declaration.group(1).upper()}> declaration at character {declaration.start()}; "
            "Label Studio's label configs have none, and its entities could expand without bound",
        )
    key = (hashlib.sha256(label_config.encode("utf-8", "surrogatepass")).digest(), return_type)
    control = CONTROLS.get(key)
    if control is None:
        control = _parse_output_control(label_config, return_type, field)
        CONTROLS.put(key, control)
    return control


def _parse_output_control(label_config: str, return_type: str, field: str) -> OutputControl:
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError as exc:
        raise RequestError(field, f"not valid XML ({exc})") from None
    images = {el.get("name"): el.get("value", "") for el in root.iter() if el.tag.lower() == "image"}
    candidates = [el for el in root.iter() if el.tag.lower() == return_type.lower()]
    candidates.sort(key=lambda el: el.get("smart", "").lower() == "true")
    for element in candidates[:1]:
        name, to_name = element.get("name"), element.get("toName")
        if not name or to_name not in images:
            raise RequestError(field, f"<{element.tag}> needs a name and a toName naming an <Image>")
        labels = tuple(child.get("value") for child in element if child.get("value") is not None)
        return OutputControl(return_type, name, to_name, images[to_name].lstrip("$"), labels)
    raise RequestError(field, f"has no <{return_type}> control tag, which return_format.type {return_type} needs")
