"""`python -m probe`: the same as `sam2plus-probe`."""

import sys

from .cli import main

sys.exit(main())
