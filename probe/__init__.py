"""sam2plus-probe: send one image and one prompt through a SAM2Plus backend and keep what it did.

The stages, each a module of its own:

    options    CLI flags + YAML config -> ProbeOptions (defaults, ${name} expansion)
    prompts    the probe's prompt syntax -> prompt items in pixels -> Label Studio context
    staging    how the image reaches the backend: by name in a shared cache folder, or as a data: URL
    request    the /setup and /predict bodies (label config, task, context)
    transport  how the bodies reach a backend: HTTP, or in-process (--local)
    render     pictures: the image as the backend decodes it, prompt, prediction overlay and crops
    outputs    the folders the probe writes (request record, intermediates, outputs)
    runner     prepare (every input checked, no work) and one run, transport-agnostic
    cli        argument parsing, exit codes, stdout
"""

from .errors import ProbeError

__all__ = ["ProbeError"]
