"""Pre-annotation of whole tasks: a prompt-less /predict answered with automatic masks.

Label Studio 1.23.2 asks for predictions without a context in two places: *Retrieve predictions*
in the Data Manager (all selected tasks in one /predict) and opening a task whose project shows
predictions (one task, while the editor waits). It waits ML_TIMEOUT_PREDICT = 100 s for the
answer (ml/api_connector.py) and then stores nothing at all; it expects one entry per task, and
an entry without `result` is skipped (logged) while the others are stored. It stores a task's
prediction under the entry's `model_version` and, on the next Retrieve, asks again only for tasks
without a prediction of the backend's current model version. So within one time budget
(`auto_annotation.time_budget`, at most 90 s) the tasks are done one after another: a task
finished in time gets its regions; one cut short by the deadline gets the regions found so far
under the model version with ":partial" appended (kept, and asked again by the next Retrieve); a
task not reached, or whose image fails, gets an entry without `result`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from .automask import AutoMasks, auto_masks
from .errors import RequestError
from .frames import FrameMap, Window, full_frame
from .labelconfig import find_output_control
from .logtext import logtext
from .params import AutoAnnotation, ExtraParams
from .pipeline import Pipeline, embedding_key
from .results import regions

__all__ = ["PARTIAL", "pre_annotate", "annotate_task"]

log = logging.getLogger(__name__)

PARTIAL = ":partial"  # appended to the model version of a task cut short by the time budget


def pre_annotate(
    pipeline: Pipeline,
    tasks: list,
    label_config: str,
    params: ExtraParams,
    model_version: str,
    pause: Callable[[], None] = lambda: None,
) -> list[dict]:
    """One Label Studio prediction entry per task, in order, all within the time budget."""
    auto = params.auto_annotation or AutoAnnotation()
    deadline = time.monotonic() + auto.time_budget
    answers = []
    for index, task in enumerate(tasks):
        if time.monotonic() >= deadline:
            answers.append({"model_version": model_version, "error": "not reached within auto_annotation.time_budget"})
            continue
        try:
            result, found = annotate_task(pipeline, task, label_config, params, deadline, pause)
        except RequestError as exc:
            log.warning("pre-annotation of tasks[%s] failed: %s", logtext(index), logtext(exc))
            answers.append({"model_version": model_version, "error": str(exc)})
            continue
        scores = [region["score"] for region in result]
        answers.append(
            {
                "result": result,
                "score": float(np.mean(scores)) if scores else 0.0,
                "model_version": model_version + ("" if found.complete else PARTIAL),
            }
        )
        log.info(
            "pre-annotation of tasks[%s]: %s regions, %s of %s windows, %s encoder runs",
            *map(logtext, (index, len(result), found.windows_done, found.windows, found.encoder_runs)),
        )
    return answers


def annotate_task(
    pipeline: Pipeline,
    task: dict,
    label_config: str,
    params: ExtraParams,
    deadline: float,
    pause: Callable[[], None] = lambda: None,
) -> tuple[list[dict], AutoMasks]:
    """The task's automatic masks as Label Studio regions in the project's return format, labelled
    with auto_annotation.label (or the output tag's first label)."""
    auto = params.auto_annotation or AutoAnnotation()
    control = find_output_control(label_config, params.return_format.type)
    local, info, field = pipeline.image(task, control)
    with local:
        size = full_frame(info.size, params).frame_size
        frame = pipeline.frame(local, info, size, field)
        fill = params.subpatching.padding_fill if params.subpatching else (0, 0, 0)

        def key(digest: str, frame_map: FrameMap) -> tuple:
            return embedding_key(digest, frame_map, fill)

        found = auto_masks(pipeline.segmenter, frame, info.size, local.digest, params, key, deadline, pause)
    label = auto.label or (control.labels[0] if control.labels else None)
    whole = FrameMap(info.size, info.size, Window(0, 0, *info.size), "fullframe")  # masks are in image pixels
    result = [
        region
        for mask, score in zip(found.masks, found.scores, strict=True)
        for region in regions(mask, whole, params.return_format, control, label, score)
    ]
    return result, found
