"""Interactive contexts as Label Studio 1.23.2's editor (LSF) serialises smart regions, and the
labeling configs they come from.

Percent coordinates of the image's natural size, `original_width`/`original_height`, an `id`,
`origin`, and for key points a top-level `is_positive` (Alt-click makes a point negative). A
refinement click resends every earlier prompt of the object with the new one. A config is one
`<Image name="image" value="$image">` and control tags on it (`control`, `label_config`). Used
by the tests, the benchmark and sam2plus-probe, so that all of them send what the editor sends.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from xml.sax.saxutils import quoteattr

__all__ = ["IMAGE", "context", "control", "keypoint_region", "label_config", "rectangle_region"]

IMAGE = "image"  # the Image tag's name, and the task data key it shows ($image)


def rectangle_region(box, width: int, height: int, *, from_name: str = "prompt", labels=None) -> dict:
    """A smart rectangle from pixel corners (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    value = {
        "x": 100 * x0 / width,
        "y": 100 * y0 / height,
        "width": 100 * (x1 - x0) / width,
        "height": 100 * (y1 - y0) / height,
        "rotation": 0,
    }
    kind = "rectangle"
    if labels is not None:
        value["rectanglelabels"] = list(labels)
        kind = "rectanglelabels"
    return _region(value, kind, width, height, from_name)


def keypoint_region(
    x: float, y: float, width: int, height: int, *, positive: bool = True, from_name: str = "prompt", labels=None
) -> dict:
    """A smart key point at pixel (x, y); Alt-click in the editor makes it negative."""
    value = {"x": 100 * x / width, "y": 100 * y / height, "width": 0.6}
    kind = "keypoint"
    if labels is not None:
        value["keypointlabels"] = list(labels)
        value["labels"] = list(labels)
        kind = "keypointlabels"
    region = _region(value, kind, width, height, from_name)
    region["is_positive"] = positive
    return region


def _region(value: dict, kind: str, width: int, height: int, from_name: str) -> dict:
    return {
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": value,
        "id": uuid.uuid4().hex[:10],
        "from_name": from_name,
        "to_name": IMAGE,
        "type": kind,
        "origin": "manual",
    }


def context(*regions: dict) -> dict:
    return {"result": list(regions)}


def control(tag: str, name: str, *, smart: bool = False, labels: Sequence[str] = ()) -> str:
    """One control tag on the image, e.g. `control("RectangleLabels", "prompt", smart=True, labels=["tooth"])`;
    a *Labels tag carries one `<Label>` per label."""
    attributes = f'name={quoteattr(name)} toName="{IMAGE}"' + (' smart="true"' if smart else "")
    if tag.endswith("Labels"):
        return f"<{tag} {attributes}>" + "".join(f"<Label value={quoteattr(label)}/>" for label in labels) + f"</{tag}>"
    return f"<{tag} {attributes}/>"


def label_config(*controls: str, zoom: bool = False) -> str:
    """A labeling config: the image (`zoom`: the editor's zoom on) and the `control` tags."""
    image = f'<Image name="{IMAGE}" value="${IMAGE}"' + (' zoom="true"' if zoom else "") + "/>"
    return "<View>" + image + "".join(controls) + "</View>"
