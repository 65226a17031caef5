"""The numbers a config holds: counts, seconds, sizes, prices.

Every numeric field of the config and of a cloud's section uses one of these, so that
no value silently becomes something else: pydantic's lax mode reads ``true`` as 1 (one
second of ``max_run``) and takes ``.nan`` or ``.inf`` as a float (a reclaim time that
never fires). Strict types refuse booleans and numeric strings; finite floats refuse
NaN and infinity. An int is still a valid float (``grace_period: 5``).

Counts and seconds stop at the largest 32-bit integer: the clouds' APIs carry them as
int32 (SageMaker's StoppingCondition, Azure ML's scale settings), and past that an SDK
fails in a traceback (``OverflowError``) instead of the config in one line. A field
whose cloud states a smaller limit says so with its own ``le=``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, AllowInfNan, BeforeValidator, Strict

#: The largest value an int32 field of a cloud API takes.
INT32_MAX = 2**31 - 1


def _int32(value: int) -> int:
    """The int32 bound as a validator, not ``Field(le=...)``: pydantic keeps only the last
    of two ``le`` bounds, so a field's own ``le=100`` beside it would be ignored."""
    if value > INT32_MAX:
        raise ValueError(f"must be at most {INT32_MAX}")
    return value


#: A whole number (instances, attempts, nodes); never true/false, "3" or 3.0.
Count = Annotated[int, Strict(), AfterValidator(_int32)]
#: Whole seconds (run and wait limits, idle times).
Seconds = Annotated[int, Strict(), AfterValidator(_int32)]
#: A finite number (seconds with a fraction, sizes, prices); never true/false, NaN or inf.
Finite = Annotated[float, Strict(), AllowInfNan(False)]

_DURATION_PART = re.compile(r"([0-9]+)([dhms])")  # ASCII digits: "١h" is not 1 hour
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def _duration_seconds(value: Any) -> Any:
    """``8h``, ``90m``, ``1h30m``, ``2d`` or whole seconds, as whole seconds."""
    if not isinstance(value, str):
        return value
    text = value.strip().replace(" ", "")
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(
            f"{value[:40]!r} is not a duration: write seconds (3600) or a number with a "
            "unit, d h m s (8h, 90m, 1h30m)"
        )
    return sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)


#: A span of time in whole seconds, written as seconds or with units (``8h``, ``1h30m``).
Duration = Annotated[int, BeforeValidator(_duration_seconds), Strict(), AfterValidator(_int32)]

__all__ = ["INT32_MAX", "Count", "Duration", "Finite", "Seconds"]
