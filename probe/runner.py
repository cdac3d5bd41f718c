"""One probe run: stage the image, build the bodies, /setup, /predict, write what was asked for.

It takes any transport (probe.transport), so the HTTP and the in-process runs share every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .options import ProbeOptions
from .outputs import copy_intermediates, write_prediction, write_prediction_images, write_request_record
from .prompts import parse_prompt, to_context
from .render import SourceImage
from .request import ProbeRequest, build_request
from .staging import StagedImage, stage_image
from .transport import Transport


@dataclass
class ProbeRun:
    request: ProbeRequest
    staged: StagedImage
    response: dict
    written: dict[str, list[Path]] = field(default_factory=dict)  # output kind -> files


def run_probe(options: ProbeOptions, transport: Transport,
              on_prediction: Callable[[dict], None] | None = None) -> ProbeRun:
    """Run the probe; `on_prediction` sees the /predict answer before any output is written."""
    staged = stage_image(options.image, options.cache_dir)
    items = parse_prompt(options.prompt, staged.size)
    request = build_request(options.project, staged.name, items, to_context(items, staged.size),
                            options.extra_params, artifacts=options.intermediates is not None)
    source = SourceImage(staged.local, staged.size)
    scale = source.scale_for(options.fullframe_scale)
    written: dict[str, list[Path]] = {}

    if options.request_record is not None:  # before sending: a refused request is recorded too
        record = {"name": options.name, "image": str(options.image), "cached_as": staged.name,
                  "image_size": list(staged.size), "backend": transport.description,
                  "extra_params_file": options.extra_params_source, "prompt": options.prompt,
                  "setup": request.setup, "predict": request.predict}
        written["request_record"] = write_request_record(options.request_record, source, items, scale, record)

    transport.setup(request.setup)
    response = transport.predict(request.predict)
    if on_prediction:
        on_prediction(response)

    if options.output is not None:
        written["output"] = write_prediction(options.output, response)
    if options.output_imgs is not None:
        written["output_imgs"] = write_prediction_images(options.output_imgs, source, items, response, scale)
    if options.intermediates is not None:
        written["intermediates"] = copy_intermediates(options.intermediates, response, options.cache_dir)
    return ProbeRun(request, staged, response, written)
