"""`sam2plus-probe`: the command line around probe.runner.

stdout carries only the /predict answer (JSON, one line); everything else goes to stderr.
Exit codes: 0 done, 1 the backend refused or could not be reached, or an output failed,
2 bad flags, config, extra_params, image or prompt (found before anything is built or sent).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .errors import ProbeError
from .options import LOCAL_CACHE_DIR, ProbeOptions, load_options
from .runner import prepare, run_probe
from .transport import HttpTransport, LocalTransport

__all__ = ["main", "shared_cache"]


def main(argv: list[str] | None = None) -> int:
    try:
        options = load_options(argv)
        prepared = prepare(options)  # every input checked: only now is a model built or a backend called
        cache = shared_cache(options)
        if options.local:
            transport = LocalTransport.from_env(cache)
        else:
            transport = HttpTransport(options.url, options.timeout)
        run = run_probe(prepared, transport, cache, on_prediction=_print_prediction)
    except ProbeError as exc:
        print(f"sam2plus-probe: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    for kind, paths in run.written.items():
        print(f"sam2plus-probe: {kind}: {len(paths)} file(s) in {getattr(options, kind)}", file=sys.stderr)
    return 0


def shared_cache(options: ProbeOptions) -> Path | None:
    """The backend's CACHE_DIR as seen here, when the probe shares it: --local's own (created),
    or a --cache-dir that exists. None: the image travels inside the request."""
    if options.local:
        return options.cache_dir or Path(LOCAL_CACHE_DIR)
    if options.cache_dir is None:
        return None
    if not options.cache_dir.is_dir():
        print(
            f"sam2plus-probe: --cache-dir {options.cache_dir} does not exist here: the image is sent inside "
            "the request",
            file=sys.stderr,
        )
        return None
    return options.cache_dir


def _print_prediction(response: dict) -> None:
    sys.stdout.write(json.dumps(response) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
