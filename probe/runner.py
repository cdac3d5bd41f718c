"""One probe run in two steps: `prepare` checks every input and does no work; `run_probe` sends
the image (by name in a shared cache folder, or as a data: URL), /setup, /predict, and writes
what was asked for.

`run_probe` takes any transport (probe.transport), so the HTTP and the in-process runs share every step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sam2plus.errors import RequestError
from sam2plus.params import ExtraParams, parse_extra_params

from .errors import FAILED, ProbeError
from .options import EXAMPLE_IMAGE, EXAMPLE_PROMPT, ProbeOptions
from .outputs import fetch_intermediates, write_prediction, write_prediction_images, write_request_record
from .prompts import Box, Point, parse_prompt
from .render import SourceImage
from .request import ProbeRequest, build_request
from .staging import SentImage, send_image
from .transport import Transport

__all__ = ["Prepared", "ProbeRun", "prepare", "run_probe"]

CACHE_DIR_REFUSED = "is not a file inside CACHE_DIR"  # the backend's words for a name it cannot find


@dataclass
class Prepared:
    """A run's checked inputs: options, the image (header read, preview decoded), prompt and params."""

    options: ProbeOptions
    source: SourceImage
    prompt: object  # as given, or the bundled example's
    items: list[Box | Point]
    params: ExtraParams
    scale: float  # of the full-frame pictures


@dataclass
class ProbeRun:
    request: ProbeRequest
    sent: SentImage
    response: dict
    written: dict[str, list[Path]] = field(default_factory=dict)  # output kind -> files


def prepare(options: ProbeOptions) -> Prepared:
    """Check every input before any work, in the order a user fixes them: extra_params (validated
    by the backend's own rules), the image (it exists and decodes), then the prompt against the
    image's size. ProbeError (exit code 2) names the first problem."""
    params = _check_params(options)
    source = SourceImage.open(options.image)
    scale = source.scale_for(options.fullframe_scale)
    source.preview(scale)  # decodes the image: a truncated file fails here, before anything is sent
    prompt = options.prompt
    if prompt is None:
        if options.image.resolve() != EXAMPLE_IMAGE:
            raise ProbeError(
                "prompt: missing; the default prompt belongs to the bundled example image, "
                "give --prompt (or prompt: in the config) for this one"
            )
        prompt = EXAMPLE_PROMPT
    items = parse_prompt(prompt, source.size)
    return Prepared(options, source, prompt, items, params, scale)


def run_probe(
    prepared: Prepared | ProbeOptions,
    transport: Transport,
    shared_cache: Path | None = None,
    on_prediction: Callable[[dict], None] | None = None,
) -> ProbeRun:
    """Run the probe. The image goes by name through `shared_cache` (the backend's CACHE_DIR as
    seen here) when given, else as a data: URL; `on_prediction` sees the /predict answer before
    any output is written."""
    if isinstance(prepared, ProbeOptions):
        prepared = prepare(prepared)
    options, source, items = prepared.options, prepared.source, prepared.items
    sent = send_image(options.image, source.info, shared_cache)
    request = build_request(
        options.project,
        sent.value,
        items,
        source.size,
        prepared.params,
        options.extra_params,
        artifacts=options.intermediates is not None,
    )
    written: dict[str, list[Path]] = {}

    if options.request_record is not None:  # before sending: a refused request is recorded too
        record = {
            "name": options.name,
            "image": str(options.image),
            "sent_as": sent.described(),
            "image_size": list(source.size),
            "backend": transport.description,
            "extra_params_file": options.extra_params_source,
            "prompt": prepared.prompt,
            "setup": request.setup,
            "predict": _recorded(request.predict, sent),
        }
        written["request_record"] = write_request_record(options.request_record, source, items, prepared.scale, record)

    transport.setup(request.setup)
    try:
        response = transport.predict(request.predict)
    except ProbeError as exc:
        if sent.shared and CACHE_DIR_REFUSED in str(exc):
            raise ProbeError(
                f"{exc}\n--cache-dir {shared_cache} is not the backend's CACHE_DIR; give the folder it "
                "uses, or leave --cache-dir out to send the image inside the request",
                FAILED,
            ) from None
        raise
    if on_prediction:
        on_prediction(response)

    if options.output is not None:
        written["output"] = write_prediction(options.output, response)
    if options.output_imgs is not None:
        written["output_imgs"] = write_prediction_images(options.output_imgs, source, items, response, prepared.scale)
    if options.intermediates is not None:
        written["intermediates"] = fetch_intermediates(options.intermediates, response, shared_cache, transport)
    return ProbeRun(request, sent, response, written)


def _check_params(options: ProbeOptions) -> ExtraParams:
    try:
        return parse_extra_params(options.extra_params)
    except RequestError as exc:
        raise ProbeError(f"extra-params: {options.extra_params_source}: {exc.message}") from None


def _recorded(predict: dict, sent: SentImage) -> dict:
    """The /predict body for request.json: a data: URL is shortened to its header and size."""
    if sent.shared:
        return predict
    tasks = [
        {
            **task,
            "data": {key: sent.described() if value == sent.value else value for key, value in task["data"].items()},
        }
        for task in predict["tasks"]
    ]
    return {**predict, "tasks": tasks}
