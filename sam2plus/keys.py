"""Option keys written with dashes or underscores (`patch-size` or `patch_size`): one spelling.

Used by extra_params (`params.py`) and sam2plus-probe's config files (`probe/options.py`), which
both accept either form and refuse a key given in both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = ["KeyClash", "underscore_keys", "underscored"]


class KeyClash(NamedTuple):
    """One key given twice, in two spellings: the normalised key and both spellings as given."""

    key: str
    first: str
    second: str


def underscored(key: str) -> str:
    """The key's normal form: dashes turned into underscores."""
    return key.replace("-", "_")


def underscore_keys(mapping: Mapping[str, Any]) -> tuple[dict[str, Any], list[KeyClash]]:
    """The mapping with its keys in normal form (the first spelling wins), and every clash in order."""
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    clashes = []
    for key, value in mapping.items():
        norm = underscored(key)
        if norm in out:
            clashes.append(KeyClash(norm, spelled[norm], key))
            continue
        out[norm] = value
        spelled[norm] = key
    return out, clashes
