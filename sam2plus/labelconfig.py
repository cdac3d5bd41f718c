"""The label config's output control for the configured return format, and its image."""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .errors import RequestError


@dataclass(frozen=True)
class OutputControl:
    """Where results go: the control tag's name, the image it targets and the task data key."""

    tag: str
    from_name: str
    to_name: str
    image_key: str
    labels: tuple[str, ...]


@functools.lru_cache(maxsize=256)
def find_output_control(label_config: str, return_type: str, field: str = "label_config") -> OutputControl:
    """The `<return_type name=... toName=...>` tag of the config (tag names match case-insensitively).

    A tag without smart="true" is preferred: when the prompt and the output share a tag type
    (a smart RectangleLabels prompt, a RectangleLabels output), the output is the plain one.
    """
    if not isinstance(label_config, str) or not label_config.strip():
        raise RequestError(field, "missing: the project's label config is needed to place results")
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
