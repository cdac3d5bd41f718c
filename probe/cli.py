"""`sam2plus-probe`: the command line around probe.runner.

stdout carries only the /predict answer (JSON, one line); everything else goes to stderr.
Exit codes: 0 done, 1 the backend refused or an output failed, 2 bad flags, config or prompt.
"""

from __future__ import annotations

import json
import sys

from .errors import ProbeError
from .options import load_options
from .runner import run_probe
from .transport import HttpTransport, LocalTransport


def main(argv: list[str] | None = None) -> int:
    try:
        options = load_options(argv)
        transport = LocalTransport.from_env(options.cache_dir) if options.local else HttpTransport(
            options.url, options.timeout)
        run = run_probe(options, transport, on_prediction=_print_prediction)
    except ProbeError as exc:
        print(f"sam2plus-probe: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    for kind, paths in run.written.items():
        print(f"sam2plus-probe: {kind}: {len(paths)} file(s) in {getattr(options, kind)}", file=sys.stderr)
    return 0


def _print_prediction(response: dict) -> None:
    sys.stdout.write(json.dumps(response) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
