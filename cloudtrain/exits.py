"""How every ``cloudtrain`` command ends: its exit codes, and one line (or JSON) on failure.

0 success; 1 the run failed; 2 the config or arguments are invalid (one line per
problem, before anything is created anywhere).
"""

from __future__ import annotations

import sys
from typing import Any

from cloudtrain import jsonout
from cloudtrain.errors import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2


def fail(message: str, code: int, as_json: bool = False, invalid: ConfigError | None = None) -> int:
    """Say why on stderr (and as JSON on stdout with ``as_json``); return ``code``. With
    ``invalid``, the JSON lists its problems, a field and a message each."""
    if as_json:
        output: dict[str, Any] = {
            "status": "invalid" if code == EXIT_INVALID else "failed",
            "error": message,
        }
        if invalid is not None:
            output["problems"] = [
                {"field": problem.field, "message": problem.message} for problem in invalid.problems
            ]
        print(jsonout.dumps(output))
    print(message, file=sys.stderr)
    return code
