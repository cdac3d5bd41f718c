"""sam2plus-probe: send one image and one prompt through a SAM2Plus backend and keep what it did.

The stages, each a module of its own:

    options    CLI flags + YAML config -> ProbeOptions (defaults, ${name} expansion)
    prompts    the probe's prompt syntax -> prompt items in pixels -> Label Studio context
    staging    the image -> a copy inside the backend's CACHE_DIR, and its oriented size
    request    the /setup and /predict bodies (label config, task, context)
    transport  how the bodies reach a backend: HTTP now, in-process (--local)
    render     drawing: prompt, prediction overlay and crops on downscaled frames
    outputs    the folders the probe writes (request record, intermediates, outputs)
    runner     one probe run, transport-agnostic
    cli        argument parsing, exit codes, stdout
"""

from .errors import ProbeError

__all__ = ["ProbeError"]
