"""Big arrays worked on in bands of rows, so that temporaries stay small whatever the image's size.

One budget for every banded loop (decoding to RGB, resampling masks, brush RLE): a band holds
about BAND_PIXELS pixels, however wide the rows are.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["BAND_PIXELS", "row_bands"]

BAND_PIXELS = 1_000_000


def row_bands(height: int, width: int, pixels: int | None = None) -> Iterator[tuple[int, int]]:
    """(top, bottom) of consecutive bands covering `height` rows of `width` pixels, each holding
    at most `pixels` (default BAND_PIXELS, read at call time) and at least one row."""
    rows = max(1, (pixels or BAND_PIXELS) // max(1, width))
    for top in range(0, height, rows):
        yield top, min(height, top + rows)
