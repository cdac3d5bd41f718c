"""Encode images into the embedding store ahead of the annotators: a whole Label Studio project, or
a folder or list of images.

    python -m sam2plus.encode --project 12 [--extra-params JSON] [--limit N]
    python -m sam2plus.encode [--extra-params JSON] PATH...   (image files, folders, or @list.txt)

Run from a checkout or in the backend's container, with the backend's settings in the
environment (MODEL_CONFIG, MODEL_CHECKPOINT, DEVICE, CACHE_DIR, EMBEDDING_STORE_DIR,
EMBEDDING_STORE_MB, LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY): it builds the backend (`SAM2Plus`)
and prepares each image as a warm-up does (`Pipeline.prepare`): the whole frame, or with
`subpatching.warm_grid` the grid of windows, each encoded unless the store holds it. A project's
tasks come from Label Studio's API (by id, labelled ones too) and their images are fetched the
way the backend fetches them; pass the project's extra_params (`--extra-params`) so that the
frame and the windows are those its clicks use. Resumable: what the store holds is skipped
without a decode. Bounded by the store: it stops before an image whose embeddings would not fit
(it never evicts what it just made to make room). A progress bar on stderr; at the end, images per second.

Features are keyed on the model's identity (sam2plus/identity.py): run it with the model,
ENCODER_RUNTIME and ENCODER_PRECISION of the servers that will read the store (a CUDA machine
encodes with torch in bf16, which CPU servers running OpenVINO or torch f32 do not read;
docs/how-it-works.md, The embedding store).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .config import ServerConfig
from .downloads import LocalImage
from .files import sha1_of_file
from .images import read_info
from .labelconfig import find_output_control
from .params import ExtraParams, parse_extra_params
from .projects import LabelStudioProjects

__all__ = ["EXTENSIONS", "EncodeReport", "encode_files", "encode_project", "image_paths", "main"]

EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")


@dataclass
class EncodeReport:
    """What a run did: images prepared, windows encoded, images that failed, seconds, and whether
    it stopped at a full store."""

    images: int = 0
    encoded: int = 0
    failed: int = 0
    seconds: float = 0.0
    store_full: bool = False

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def image_paths(items: list[str]) -> list[Path]:
    """Image files from files, folders (searched recursively by extension) and @lists (one path a line)."""
    paths: list[Path] = []
    for item in items:
        if item.startswith("@"):
            lines = Path(item[1:]).read_text().splitlines()
            paths += image_paths([line.strip() for line in lines if line.strip() and not line.startswith("#")])
        elif Path(item).is_dir():
            paths += sorted(p for p in Path(item).rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        else:
            paths.append(Path(item))
    return paths


def encode_files(model, paths: list[Path], params: ExtraParams, progress=None) -> EncodeReport:
    """Prepare each image file for the store (see the module docstring)."""

    def prepare(path: Path, room) -> None:
        field = str(path)
        info = read_info(path, model.config.max_image_pixels, field)
        local = LocalImage(path, sha1_of_file(path))
        if room(model.pipeline.windows_to_encode(local.digest, info.size, params)):
            model.pipeline.prepare(local, info, field, params)

    return _run(model, ((str(p), partial(prepare, p)) for p in paths), len(paths), progress)


def encode_project(model, project: int, params: ExtraParams, limit: int | None = None, progress=None) -> EncodeReport:
    """Prepare every task's image of a Label Studio project, by id (labelled ones too)."""
    projects = LabelStudioProjects(model.pipeline.fetcher.label_studio)
    label_config = projects.label_config(project)
    control = find_output_control(label_config, params.return_format.type)  # a config that does not fit stops here
    tasks = list(projects.tasks(project, unlabelled=False))[:limit]

    def prepare(task: dict, room) -> None:
        local, info, field = model.pipeline.image(task, control)
        with local:
            if room(model.pipeline.windows_to_encode(local.digest, info.size, params)):
                model.pipeline.prepare(local, info, field, params)

    return _run(model, ((f"task {t['id']}", partial(prepare, t)) for t in tasks), len(tasks), progress)


def _run(model, jobs: Iterator, total: int, progress) -> EncodeReport:
    """Run each job(room) with a progress bar; `room(windows)` is False once the store has no room
    for those windows' embeddings (then the run stops)."""
    from tqdm import tqdm

    store = model.pipeline.segmenter.store
    report = EncodeReport()

    def room(windows: list) -> bool:
        used, files, _ = store.folder.usage()
        one = used / files if files else 0  # an embedding's file, as stored so far
        report.store_full = bool(windows) and used + len(windows) * one > store.folder.max_bytes
        return not report.store_full

    started = time.perf_counter()
    before = model.pipeline.segmenter.encoder_runs
    out = progress or sys.stderr
    with tqdm(total=total, unit="image", file=out, disable=progress is False) as bar:
        for name, job in jobs:
            try:
                job(room)
                if report.store_full:
                    break
                report.images += 1
            except Exception as exc:  # noqa: BLE001 - one bad image does not stop the run
                report.failed += 1
                bar.write(f"{name}: {type(exc).__name__}: {exc}", file=out)
            bar.update(1)
    report.seconds = time.perf_counter() - started
    report.encoded = model.pipeline.segmenter.encoder_runs - before
    return report


def main(argv=None) -> int:
    """The command line (module docstring); prints the report as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m sam2plus.encode", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="image files, folders, or @file listing paths")
    parser.add_argument("--project", type=int, help="a Label Studio project's numeric id (LABEL_STUDIO_URL)")
    parser.add_argument("--extra-params", default="", help="the project's extra_params, as JSON")
    parser.add_argument("--limit", type=int, help="at most this many tasks")
    args = parser.parse_args(argv)
    if bool(args.paths) == (args.project is not None):
        parser.error("give either --project or image paths")
    params = parse_extra_params(args.extra_params)
    from model import SAM2Plus  # the backend, as gunicorn serves it

    model = SAM2Plus(ServerConfig.from_env())
    if model.pipeline.segmenter.store is None:
        parser.error("EMBEDDING_STORE_MB=0: there is no store to encode into")
    if args.project is not None:
        if model.pipeline.fetcher.label_studio is None:
            parser.error("--project needs LABEL_STUDIO_URL (and LABEL_STUDIO_API_KEY)")
        report = encode_project(model, args.project, params, args.limit)
    else:
        report = encode_files(model, image_paths(args.paths), params)
    print(
        json.dumps(
            {
                "images": report.images,
                "encoded_windows": report.encoded,
                "failed": report.failed,
                "seconds": round(report.seconds, 1),
                "images_per_second": round(report.images_per_second, 3),
                "store_full": report.store_full,
            }
        )
    )
    if report.store_full:
        print("the embedding store is full: raise EMBEDDING_STORE_MB to encode the rest", file=sys.stderr)
    return 1 if report.failed or report.store_full else 0


if __name__ == "__main__":
    raise SystemExit(main())
