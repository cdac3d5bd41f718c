"""The folders a probe run writes, each asked for separately:

    request record   input.jpg (the image, prompt in red), request.json (what was sent)
    intermediates    the backend's artifact folder of this request, copied
    output           prediction.json (the /predict answer)
    output images    fullframe_prediction.jpg (prompt + prediction), crop_NN.jpg (one per region)

None of them depends on the transport: they read the bodies, the answer and the cache dir.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .errors import FAILED, ProbeError
from .prompts import Box, Point
from .render import SourceImage, crop_picture, draw_prompt, draw_shapes, region_shapes, save_rgb


def write_request_record(folder: Path, source: SourceImage, items: list[Box | Point], scale: float,
                         record: dict) -> list[Path]:
    folder = _ready(folder)
    picture = draw_prompt(source.preview(scale), items, scale)
    written = [save_rgb(folder / "input.jpg", picture)]
    (folder / "request.json").write_text(json.dumps(record, indent=2) + "\n")
    return written + [folder / "request.json"]


def write_prediction(folder: Path, response: dict) -> list[Path]:
    folder = _ready(folder)
    path = folder / "prediction.json"
    path.write_text(pretty_json(response) + "\n")
    return [path]


def write_prediction_images(folder: Path, source: SourceImage, items: list[Box | Point], response: dict,
                            scale: float) -> list[Path]:
    """The full-frame overlay and one tight crop per drawable region (none for an empty mask)."""
    folder = _ready(folder)
    results = response.get("results") or [{}]
    shapes = region_shapes(results[0].get("result") or [], source.size)
    frame = draw_prompt(draw_shapes(source.preview(scale), shapes, scale), items, scale)
    written = [save_rgb(folder / "fullframe_prediction.jpg", frame)]
    for stale in folder.glob("crop_*.jpg"):  # a previous run of this name may have had more regions
        stale.unlink()
    for index, shape in enumerate(shapes):
        written.append(save_rgb(folder / f"crop_{index:02d}.jpg", crop_picture(source, shape, items)))
    return written


def copy_intermediates(folder: Path, response: dict, cache_dir: Path) -> list[Path]:
    """Copy the artifact folder the backend named (relative to its CACHE_DIR) from the cache dir."""
    named = response.get("artifacts")
    if not isinstance(named, str) or not named:
        raise ProbeError("intermediates: the backend's answer names no artifacts folder "
                         "(does this backend support \"artifacts\": true?)", FAILED)
    local = locate_artifacts(named, cache_dir)
    folder = _ready(folder)
    written = []
    for path in sorted(local.iterdir()):
        if path.is_file() and not path.is_symlink():
            written.append(Path(shutil.copy2(path, folder / path.name)))
    return written


def locate_artifacts(named: str, cache_dir: Path) -> Path:
    """The backend's artifact folder inside the local cache dir, and nowhere else.

    The backend names it relative to its CACHE_DIR (`artifacts/<id>`); an older backend named
    it by its absolute path (a container's `/cache/artifacts/<id>`), of which the part from
    `artifacts/` on is taken. Either way the folder must be one folder inside
    `<cache-dir>/artifacts` once resolved: an answer cannot make the probe copy anything else."""
    pure = PureWindowsPath(named) if "\\" in named else PurePosixPath(named)
    parts = pure.parts
    if "artifacts" not in parts:
        raise ProbeError(f"intermediates: the backend named {named!r}, which is not an artifacts folder", FAILED)
    tail = parts[len(parts) - 1 - parts[::-1].index("artifacts"):]
    root = (cache_dir / "artifacts").resolve()
    if len(tail) != 2 or tail[1] in ("", ".", ".."):
        raise ProbeError(f"intermediates: the backend named {named!r}, which is not one folder of "
                         "<cache-dir>/artifacts", FAILED)
    mapped = cache_dir.joinpath(*tail)
    if mapped.resolve().parent != root:
        raise ProbeError(f"intermediates: {mapped} leads outside {root}; not copied", FAILED)
    if not mapped.is_dir():
        raise ProbeError(f"intermediates: the backend wrote {named}, but {mapped} does not exist here; "
                         f"--cache-dir must be the folder mounted as the backend's CACHE_DIR", FAILED)
    return mapped


def pretty_json(value: Any, indent: int = 0) -> str:
    """Indented JSON whose lists of plain numbers stay on one line (an RLE is thousands of them)."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(str(k))}: {pretty_json(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
        if all(isinstance(v, list) and not any(isinstance(x, (dict, list)) for x in v) for v in value):
            return "[" + ", ".join(json.dumps(v) for v in value) + "]"  # e.g. polygon points
        items = [f"{inner}{pretty_json(v, indent + 2)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value)


def _ready(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProbeError(f"cannot create the folder {folder} ({exc.strerror or exc})", FAILED) from None
    return folder
