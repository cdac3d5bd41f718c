"""The bodies of /setup and /predict, as Label Studio would send them for one interactive click.

The label config is built for the run: one smart control tag per prompt kind used and the
output tag that the extra_params' return_format.type asks for (BrushLabels when unset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sam2plus import contexts
from sam2plus.contexts import IMAGE, control
from sam2plus.params import ExtraParams

from .prompts import BOX_CONTROL, POINT_CONTROL, Box, Point, to_context

__all__ = ["ProbeRequest", "build_request", "label_config"]

OUTPUT_NAME = "output"


@dataclass(frozen=True)
class ProbeRequest:
    """Everything sent for one probe run."""

    project: str
    label_config: str
    setup: dict
    predict: dict


def label_config(items: list[Box | Point], output_type: str) -> str:
    """A minimal labeling config: the image, smart prompt controls and the output control."""
    labels = sorted({item.label for item in items if item.label is not None}) or ["probe"]
    controls = []
    for kind, name, labelled_tag, bare_tag in (
        (Box, BOX_CONTROL, "RectangleLabels", "Rectangle"),
        (Point, POINT_CONTROL, "KeyPointLabels", "KeyPoint"),
    ):
        used = [item for item in items if isinstance(item, kind)]
        if used:
            controls.append(
                control(labelled_tag if used[0].label is not None else bare_tag, name, smart=True, labels=labels)
            )
    controls.append(control(output_type, OUTPUT_NAME, labels=labels))
    return contexts.label_config(*controls)


def build_request(
    project: str,
    image: str,
    items: list[Box | Point],
    size: tuple[int, int],
    params: ExtraParams,
    extra_params: Any,
    artifacts: bool,
) -> ProbeRequest:
    """The /setup body (`extra_params` as given, {} for stock behaviour) and the /predict body for
    the task image value `image` of `size`; the output tag follows the validated `params`."""
    config = label_config(items, params.return_format.type)
    setup = {"project": project, "schema": config, "extra_params": {} if extra_params is None else extra_params}
    predict = {
        "tasks": [{"id": 1, "data": {IMAGE: image}}],
        "project": project,
        "label_config": config,
        "params": {"login": None, "password": None, "context": to_context(items, size)},
    }
    if artifacts:
        predict["artifacts"] = True
    return ProbeRequest(project, config, setup, predict)
