"""SAM2Plus: an interactive SAM2 segmentation backend for Label Studio.

A click flows one way: Label Studio request -> prompt -> frame -> model -> mask -> regions -> response.
"""

__version__ = "0.1.0"
