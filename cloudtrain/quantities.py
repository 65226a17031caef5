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

from typing import Annotated

from pydantic import AllowInfNan, Field, Strict

#: The largest value an int32 field of a cloud API takes.
INT32_MAX = 2**31 - 1

#: A whole number (instances, attempts, nodes); never true/false, "3" or 3.0.
Count = Annotated[int, Strict(), Field(le=INT32_MAX)]
#: Whole seconds (run and wait limits, idle times).
Seconds = Annotated[int, Strict(), Field(le=INT32_MAX)]
#: A finite number (seconds with a fraction, sizes, prices); never true/false, NaN or inf.
Finite = Annotated[float, Strict(), AllowInfNan(False)]

__all__ = ["INT32_MAX", "Count", "Finite", "Seconds"]
