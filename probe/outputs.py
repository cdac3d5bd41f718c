"""The folders a probe run writes, each asked for separately:

    request record   input.jpg (the image with the prompt), request.json (what was sent)
    intermediates    the backend's artifact folder of this request: copied from the shared cache
                     folder, or downloaded from the backend (GET /artifacts/<id>)
    output           prediction.json (the /predict answer)
    output images    fullframe_prediction.jpg (prompt + prediction), crop_NN.jpg (one per region)

Every file is written atomically (sam2plus.files).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from sam2plus.files import copy_atomically, write_atomically

from .errors import FAILED, ProbeError
from .prompts import Box, Point
from .render import SourceImage, crop_picture, draw_items, draw_shapes, region_shapes, save_rgb

__all__ = [
    "artifact_id",
    "copy_intermediates",
    "download_intermediates",
    "fetch_intermediates",
    "locate_artifacts",
    "named_artifacts",
    "pretty_json",
    "write_prediction",
    "write_prediction_images",
    "write_request_record",
]

MAX_ARTIFACT_BYTES = 1 << 30  # per downloaded file: a backend's answer cannot fill the disk
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")


def write_request_record(
    folder: Path, source: SourceImage, items: list[Box | Point], scale: float, record: dict
) -> list[Path]:
    folder = _ready(folder)
    picture = draw_items(source.preview(scale), items, scale)
    return [
        save_rgb(folder / "input.jpg", picture),
        _write(folder / "request.json", json.dumps(record, indent=2) + "\n"),
    ]


def write_prediction(folder: Path, response: dict) -> list[Path]:
    return [_write(_ready(folder) / "prediction.json", pretty_json(response) + "\n")]


def write_prediction_images(
    folder: Path, source: SourceImage, items: list[Box | Point], response: dict, scale: float
) -> list[Path]:
    """The full-frame overlay and one tight crop per drawable region (none for an empty mask)."""
    folder = _ready(folder)
    results = response.get("results") or [{}]
    shapes = region_shapes(results[0].get("result") or [], source.size)
    frame = draw_items(draw_shapes(source.preview(scale), shapes, scale), items, scale)
    written = [save_rgb(folder / "fullframe_prediction.jpg", frame)]
    for stale in folder.glob("crop_*.jpg"):  # a previous run of this name may have had more regions
        stale.unlink()
    for index, shape in enumerate(shapes):
        written.append(save_rgb(folder / f"crop_{index:02d}.jpg", crop_picture(source, shape, items)))
    return written


def named_artifacts(response: dict) -> str:
    """The artifact folder the backend's answer names (relative to its CACHE_DIR)."""
    named = response.get("artifacts")
    if not isinstance(named, str) or not named:
        raise ProbeError(
            "intermediates: the backend's answer names no artifacts folder "
            '(does this backend support "artifacts": true?)',
            FAILED,
        )
    return named


def copy_intermediates(folder: Path, response: dict, cache_dir: Path) -> list[Path]:
    """Copy the artifact folder the backend named (relative to its CACHE_DIR) from the cache dir."""
    local = locate_artifacts(named_artifacts(response), cache_dir)
    folder = _ready(folder)
    written = []
    for path in sorted(local.iterdir()):
        if path.is_file() and not path.is_symlink():
            written.append(copy_atomically(path, folder / path.name))
    return written


def fetch_intermediates(folder: Path, response: dict, shared_cache: Path | None, transport) -> list[Path]:
    """The backend's artifacts of this request: copied from the shared cache folder when they are
    there, else downloaded through `transport` (GET /artifacts/<id>)."""
    ident = artifact_id(named_artifacts(response))
    if shared_cache is not None and (shared_cache / "artifacts" / ident).exists():
        return copy_intermediates(folder, response, shared_cache)
    return download_intermediates(folder, ident, transport)


def download_intermediates(folder: Path, ident: str, transport) -> list[Path]:
    """Download the files of the backend's artifact folder `ident` into `folder`; a listed name
    that is not a plain file name is refused before anything is written."""
    names = transport.artifact_names(ident)
    for name in names:
        if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name):
            raise ProbeError(
                f"intermediates: the backend listed {name!r} in artifacts/{ident}, which is not a "
                "plain file name; nothing copied",
                FAILED,
            )
    folder = _ready(folder)
    return [_write(folder / name, _bounded(transport.artifact_chunks(ident, name), name)) for name in sorted(names)]


def artifact_id(named: str) -> str:
    """The id of the artifact folder an answer names: `artifacts/<id>` (relative to the backend's
    CACHE_DIR), or an older backend's absolute path (`/cache/artifacts/<id>`), of which the part
    from `artifacts/` on is taken. Anything else is refused."""
    pure = PureWindowsPath(named) if "\\" in named else PurePosixPath(named)
    parts = pure.parts
    if "artifacts" not in parts:
        raise ProbeError(f"intermediates: the backend named {named!r}, which is not an artifacts folder", FAILED)
    tail = parts[len(parts) - 1 - parts[::-1].index("artifacts") :]
    if len(tail) != 2 or not _PLAIN_NAME.fullmatch(tail[1]):
        raise ProbeError(
            f"intermediates: the backend named {named!r}, which is not one folder of <cache-dir>/artifacts", FAILED
        )
    return tail[1]


def locate_artifacts(named: str, cache_dir: Path) -> Path:
    """The backend's artifact folder inside the local cache dir, and nowhere else: once resolved
    it must be one folder inside `<cache-dir>/artifacts`, so an answer cannot make the probe
    copy anything else."""
    root = (cache_dir / "artifacts").resolve()
    mapped = cache_dir / "artifacts" / artifact_id(named)
    if mapped.resolve().parent != root:
        raise ProbeError(f"intermediates: {mapped} leads outside {root}; not copied", FAILED)
    if not mapped.is_dir():
        raise ProbeError(
            f"intermediates: the backend wrote {named}, but {mapped} does not exist here; "
            f"--cache-dir must be the folder mounted as the backend's CACHE_DIR",
            FAILED,
        )
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


def _bounded(chunks: Iterable[bytes], name: str) -> Iterable[bytes]:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > MAX_ARTIFACT_BYTES:
            raise ProbeError(f"intermediates: {name} is larger than {MAX_ARTIFACT_BYTES} bytes; not copied", FAILED)
        yield chunk


def _write(path: Path, content: str | Iterable[bytes]) -> Path:
    try:
        return write_atomically(path, content.encode() if isinstance(content, str) else content)
    except OSError as exc:
        raise ProbeError(f"cannot write {path} ({exc.strerror or exc})", FAILED) from None


def _ready(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProbeError(f"cannot create the folder {folder} ({exc.strerror or exc})", FAILED) from None
    return folder
