"""CLI flags and a YAML config -> the ProbeOptions of one run.

A config holds the same option names as the flags (dashes or underscores, as
`sam2plus.keys` reads them); a flag given on the command line wins over the config, the
config over the defaults. Relative paths in a
config are read from the config file's folder, so a config works from any working
directory; relative paths on the command line are read from the working directory.

The output folders (request_record, intermediates, output, output_imgs) are off unless asked
for. A flag without a value, or `true` in a config, picks the default folder under
probe_out/ (output_imgs: the output folder when one is set); `${name}` in a folder expands
to the request name.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sam2plus.keys import underscore_keys

from .errors import ProbeError

__all__ = [
    "EXAMPLE_IMAGE",
    "EXAMPLE_PROMPT",
    "OUTPUT_DIRS",
    "ProbeOptions",
    "build_parser",
    "load_options",
    "read_config",
    "resolve_options",
]

EXAMPLE_IMAGE = Path(__file__).resolve().parents[1] / "examples" / "01-data" / "ichthyoliths.jpg"
# A rectangle around the biggest tooth of the bundled example (examples/01-data/make_example.py).
EXAMPLE_PROMPT = {"type": "RectangleLabel", "label": "probe", "geometry": [1370, 950, 340, 160]}
DEFAULT_URL = "http://localhost:22201"
LOCAL_CACHE_DIR = "vols/localhost/cache"  # --local's CACHE_DIR when no --cache-dir is given
DEFAULT_TIMEOUT = 600.0
OUTPUT_DIRS = {  # option -> default folder
    "request_record": "probe_out/03-requests/${name}",
    "intermediates": "probe_out/04-intermediates/${name}",
    "output": "probe_out/05-outputs/${name}",
    "output_imgs": "probe_out/05-outputs/${name}",
}
PATH_KEYS = ("image", "cache_dir", *OUTPUT_DIRS)
CONFIG_KEYS = (
    "image",
    "prompt",
    "extra_params",
    "url",
    "name",
    "cache_dir",
    "project",
    "probe_fullframe_artifact_resize",
    "local",
    "timeout",
    *OUTPUT_DIRS,
)
_DEFAULT_DIR = "\0default"  # what a folder flag given without a value holds


@dataclass(frozen=True)
class ProbeOptions:
    image: Path
    prompt: Any  # the prompt as given (object, list or JSON text), None if missing; probe.prompts reads it
    extra_params: Any  # None: stock behaviour
    extra_params_source: str | None  # the file it came from, for messages and the request record
    url: str
    name: str
    cache_dir: Path | None  # the backend's CACHE_DIR as seen here (None: not given, no folder is shared)
    project: str
    request_record: Path | None
    intermediates: Path | None
    output: Path | None
    output_imgs: Path | None
    fullframe_scale: float | None  # None: fit full-frame artifacts into 2048 px
    local: bool
    timeout: float


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sam2plus-probe",
        description="Send one image and one prompt through a SAM2Plus backend (/setup, then /predict); "
        "print the prediction JSON and, on request, keep what went in and came out.",
        epilog="Folder flags take an optional value: put IMAGE before them, or write --output=DIR.",
    )
    parser.add_argument("image", nargs="?", help=f"the image (default: the bundled {EXAMPLE_IMAGE.name})")
    parser.add_argument(
        "--prompt",
        metavar="JSON",
        help='prompt object(s), e.g. {"type": "RectangleLabel", "geometry": [x, y, w, h]}; '
        "integers are pixels (top-left + size), decimals relative (centre + size)",
    )
    parser.add_argument("--extra-params", metavar="FILE", help="JSON file of extra_params, sent to /setup")
    parser.add_argument("--url", help=f"backend base URL (default {DEFAULT_URL})")
    parser.add_argument("--config", metavar="YAML", help="YAML file with the same option names")
    parser.add_argument("--name", help="request name, ${name} in folders (default: config or image file name)")
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="the backend's CACHE_DIR as seen from here: the image is copied there and sent by "
        "name (default: none, the image travels in the request as a data: URL; "
        f"with --local: {LOCAL_CACHE_DIR})",
    )
    parser.add_argument(
        "--project", metavar="ID", help="project id for /setup and /predict (default sam2plus-probe-<name>)"
    )
    for flag, key, what in (
        ("--request-record", "request_record", "input image with the prompt + request JSON"),
        ("--intermediates", "intermediates", "the backend's artifacts of this request"),
        ("--output", "output", "prediction.json"),
        ("--output-imgs", "output_imgs", "full-frame prediction overlay and region crops"),
    ):
        names = (flag, "-o") if flag == "--output" else (flag,)
        default = ("the --output folder, else " if key == "output_imgs" else "") + OUTPUT_DIRS[key]
        parser.add_argument(
            *names,
            dest=key,
            metavar="DIR",
            nargs="?",
            const=_DEFAULT_DIR,
            help=f"write {what} (default folder: {default})",
        )
    parser.add_argument(
        "--probe-fullframe-artifact-resize",
        metavar="SCALE",
        type=float,
        dest="probe_fullframe_artifact_resize",
        help="scale (0 < SCALE <= 1) of full-frame artifacts (input.jpg, fullframe_prediction.jpg); "
        "default: fit into 2048 px",
    )
    parser.add_argument(
        "--local",
        action="store_const",
        const=True,
        help="run the backend in this process (model from MODEL_CONFIG, MODEL_CHECKPOINT, "
        "CHECKPOINT_DIR, DEVICE) instead of calling --url",
    )
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS", help=f"HTTP timeout per call (default {DEFAULT_TIMEOUT:g})"
    )
    return parser


def load_options(argv: list[str] | None = None) -> ProbeOptions:
    args = vars(build_parser().parse_args(argv))
    config_path = args.pop("config")
    config = read_config(Path(config_path)) if config_path else {}
    return resolve_options(args, config, Path(config_path) if config_path else None)


def read_config(path: Path) -> dict:
    """The config's options, keys in underscore form, relative paths made relative to its folder."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ProbeError(f"config: cannot read {path} ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ProbeError(f"config: {path} is not valid YAML ({exc})") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ProbeError(f"config: {path} must hold a mapping of options, got {type(raw).__name__}")
    config, clashes = underscore_keys({str(key): value for key, value in raw.items()})
    if clashes:
        raise ProbeError(f"config: {path}: option {clashes[0].key!r} is given twice (dash and underscore forms)")
    for name, value in config.items():
        if name not in CONFIG_KEYS:
            raise ProbeError(f"config: {path}: unknown option {name!r}; known: {', '.join(CONFIG_KEYS)}")
        if isinstance(value, str) and (name in PATH_KEYS or name == "extra_params"):
            config[name] = os.path.normpath(path.parent / value)  # an absolute value stays absolute
    return config


def resolve_options(args: dict, config: dict, config_path: Path | None = None) -> ProbeOptions:
    """Merge flags (None: not given) over config values over defaults."""

    def pick(key: str):
        return args.get(key) if args.get(key) is not None else config.get(key)

    image_given = pick("image")
    if not isinstance(image_given, (str, type(None))):
        raise ProbeError(f"image: must be a file path, got {image_given!r}")
    image = Path(image_given) if image_given is not None else EXAMPLE_IMAGE
    prompt = pick("prompt")
    if prompt is None and image_given is None:
        prompt = EXAMPLE_PROMPT  # another image needs its own: probe.runner.prepare says so, after checking the image

    name = pick("name") or (config_path.stem if config_path else image.stem)
    if not isinstance(name, str) or "/" in name or "\\" in name or name in (".", ".."):
        raise ProbeError(f"name: must be a plain name usable in a folder, got {name!r}")

    extra_params, extra_source = _extra_params(args.get("extra_params"), config.get("extra_params"))
    folders = {}
    for key in OUTPUT_DIRS:  # output_imgs without a folder of its own joins output's
        default = folders["output"] if key == "output_imgs" and folders.get("output") else None
        folders[key] = _folder(key, args.get(key), config.get(key), name, default)
    scale = pick("probe_fullframe_artifact_resize")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1):
        raise ProbeError(f"probe-fullframe-artifact-resize: must be a scale > 0 and <= 1, got {scale!r}")
    timeout = pick("timeout") or DEFAULT_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ProbeError(f"timeout: must be a number of seconds > 0, got {timeout!r}")
    local = pick("local") or False
    if not isinstance(local, bool):
        raise ProbeError(f"local: must be true or false, got {local!r}")
    project = pick("project") or f"sam2plus-probe-{name}"
    cache_dir = pick("cache_dir")
    if not isinstance(cache_dir, (str, type(None))):
        raise ProbeError(f"cache-dir: must be a folder, got {cache_dir!r}")
    return ProbeOptions(
        image=image,
        prompt=prompt,
        extra_params=extra_params,
        extra_params_source=extra_source,
        url=str(pick("url") or DEFAULT_URL),
        name=name,
        cache_dir=Path(cache_dir) if cache_dir else None,
        project=str(project),
        fullframe_scale=None if scale is None else float(scale),
        local=local,
        timeout=float(timeout),
        **folders,
    )


def _extra_params(flag: str | None, configured: Any) -> tuple[Any, str | None]:
    """A --extra-params file wins over the config's value (a file path or an inline mapping)."""
    source = flag if flag is not None else configured
    if source is None:
        return None, None
    if not isinstance(source, str):
        return source, "config"  # inline in the config: the backend validates it
    try:
        text = Path(source).read_text()
    except OSError as exc:
        raise ProbeError(f"extra-params: cannot read {source} ({exc.strerror or exc})") from None
    try:
        return json.loads(text), source
    except json.JSONDecodeError as exc:
        raise ProbeError(
            f"extra-params: {source} is not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
        ) from None


def _folder(key: str, flag: str | None, configured: Any, name: str, default: Path | None = None) -> Path | None:
    if (flag == _DEFAULT_DIR or (flag is None and configured is True)) and default is not None:
        return default
    if flag is not None:
        chosen = OUTPUT_DIRS[key] if flag == _DEFAULT_DIR else flag
    elif configured is True:
        chosen = OUTPUT_DIRS[key]
    elif configured in (None, False):
        return None
    elif isinstance(configured, str):
        chosen = configured
    else:
        raise ProbeError(f"{key}: must be a folder, true (the default folder) or false, got {configured!r}")
    return Path(chosen.replace("${name}", name))
