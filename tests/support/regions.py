"""Checks on the regions a backend answers, for every suite that runs the real SAM2 with untrained weights.

A test that checks regions inside `for region in regions` passes vacuously when the backend
answers nothing. With untrained weights (`MODEL_CHECKPOINT=untrained`) an empty answer to one
prompt is legitimate (an empty mask), so such a test sends several prompts, checks every region
of every answer, and then calls `require_some`: a backend that answers `[]` to every prompt (or
drops everything it cannot map back) fails; one unlucky prompt does not. Tests with the
`ColorRegionSegmenter` geometry test double know their answers and assert exact region counts.
"""

from __future__ import annotations

from collections.abc import Sequence


def require_some(per_prompt: Sequence[Sequence[dict]], what: str = "") -> None:
    """Fail unless at least one prompt's answer holds regions (`per_prompt`: one region list per prompt)."""
    assert per_prompt, "no prompt was sent"
    counts = [len(regions) for regions in per_prompt]
    assert any(counts), (
        f"{what + ': ' if what else ''}every prompt came back with zero regions {counts}; "
        "with untrained weights a single empty answer is possible, all of them is not plausible"
    )
