"""Interactive contexts as Label Studio 1.23.2's editor (LSF) serialises smart regions.

Percent coordinates of the image's natural size, `original_width`/`original_height`, an `id`,
`origin`, and for key points a top-level `is_positive` (Alt-click makes a point negative). A
refinement click resends every earlier prompt of the object with the new one. Used by the
end-to-end tests and the benchmark, so that both send what the editor sends.
"""

from __future__ import annotations

import uuid


def rectangle_region(box, width: int, height: int, *, from_name: str = "prompt", labels=None) -> dict:
    """A smart rectangle from pixel corners (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    value = {"x": 100 * x0 / width, "y": 100 * y0 / height,
             "width": 100 * (x1 - x0) / width, "height": 100 * (y1 - y0) / height, "rotation": 0}
    kind = "rectangle"
    if labels is not None:
        value["rectanglelabels"] = list(labels)
        kind = "rectanglelabels"
    return _region(value, kind, width, height, from_name)


def keypoint_region(x: float, y: float, width: int, height: int, *, positive: bool = True,
                    from_name: str = "prompt", labels=None) -> dict:
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
    return {"original_width": width, "original_height": height, "image_rotation": 0, "value": value,
            "id": uuid.uuid4().hex[:10], "from_name": from_name, "to_name": "image", "type": kind,
            "origin": "manual"}


def context(*regions: dict) -> dict:
    return {"result": list(regions)}
