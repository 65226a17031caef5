"""What every stage task shares: the retry rule for stages that talk to a cloud."""

from __future__ import annotations

from typing import Any

from cloudtrain.errors import TransientError

#: Prefect retries for stages that talk to a cloud: only failures worth retrying.
TRANSIENT_RETRIES = 2
TRANSIENT_RETRY_DELAYS: list[float] = [5.0, 30.0]  # seconds


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry throttling, capacity and preemption; never a validation error."""
    try:
        state.result()
    except TransientError:
        return True
    except Exception:
        return False
    return False
