"""The numbers a config holds: counts, seconds, sizes, prices.

Every numeric field of the config and of a cloud's section uses one of these, so that
no value silently becomes something else: pydantic's lax mode reads ``true`` as 1 (one
second of ``max_run``) and takes ``.nan`` or ``.inf`` as a float (a reclaim time that
never fires). Strict types refuse booleans and numeric strings; finite floats refuse
NaN and infinity. An int is still a valid float (``grace_period: 5``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AllowInfNan, Strict

#: A whole number (instances, attempts, nodes); never true/false, "3" or 3.0.
Count = Annotated[int, Strict()]
#: Whole seconds (run and wait limits, idle times).
Seconds = Annotated[int, Strict()]
#: A finite number (seconds with a fraction, sizes, prices); never true/false, NaN or inf.
Finite = Annotated[float, Strict(), AllowInfNan(False)]

__all__ = ["Count", "Finite", "Seconds"]
