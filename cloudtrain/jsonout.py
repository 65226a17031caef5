"""Strict JSON for everything cloudtrain writes: ``--json``, metrics.json, records, artifacts.

Python's ``json`` writes a NaN or infinite float as ``NaN`` / ``Infinity``, which is not
JSON: ``jq``, JavaScript's ``JSON.parse`` and most other parsers refuse the whole document.
A diverged loss is a real metric value, so it is kept, as the string ``"NaN"``,
``"Infinity"`` or ``"-Infinity"`` (what ``float()`` reads back). Every writer goes through
``dumps``, which encodes with ``allow_nan=False`` so a non-finite float that slipped past
``finite`` is an error here, never a broken file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

#: How a non-finite float is written: strings that ``float()`` parses back.
NAN = "NaN"
INFINITY = "Infinity"
NEGATIVE_INFINITY = "-Infinity"


def finite(value: Any) -> Any:
    """``value`` with every NaN/infinite float (in dicts, lists and tuples) as its string."""
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return NAN
        return INFINITY if value > 0 else NEGATIVE_INFINITY
    if isinstance(value, Mapping):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def dumps(value: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """Strict JSON text; objects json cannot encode are written as ``str()`` (paths, dates)."""
    return json.dumps(
        finite(value),
        indent=indent,
        sort_keys=sort_keys,
        allow_nan=False,
        default=str,
    )
