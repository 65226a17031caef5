"""How each attempt ends, and what the attempt loop does about it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import train_locally

from cloudtrain.errors import TrainingError
from cloudtrain.recovery import Outcome

# Sleeps in small steps and exits 0 on SIGTERM after noting it, like a script that
# checkpoints on the signal. Counts its runs in the checkpoint dir.
SLEEPER = """
    import os, signal, sys, time
    from pathlib import Path
    ckpt = Path(os.environ["SM_CHECKPOINT_DIR"])
    runs = len(list(ckpt.glob("run-*"))) + 1
    (ckpt / f"run-{runs}").write_text(os.environ["CLOUDTRAIN_SPOT"])
    signal.signal(signal.SIGTERM, lambda *a: (print("got SIGTERM", flush=True), sys.exit(0)))
    print(f"started run {runs}", flush=True)
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)  # --sleep N
    print("done", flush=True)
"""


def outcomes(result: object) -> list[str]:
    attempts = result.result.attempts if isinstance(result, TrainingError) else result.attempts  # type: ignore[attr-defined]
    return [attempt.outcome.value for attempt in attempts]


def test_success(write_config: Callable[..., Path]) -> None:
    _, result, lines = train_locally(write_config(SLEEPER))
    assert outcomes(result) == ["succeeded"]
    assert "started run 1" in lines and "done" in lines


def test_script_error_is_not_retried(write_config: Callable[..., Path]) -> None:
    script = "print('loading'); raise SystemExit('bad column: target')\n"
    path = write_config(script, compute={"spot": True}, retry={"max_attempts": 3})
    _, error, _ = train_locally(path)
    assert isinstance(error, TrainingError)
    assert outcomes(error) == ["failed"]
    reason = error.result.attempts[0].reason
    assert "exit code 1" in reason and "bad column: target" in reason
    assert "not retried" in str(error)


def test_timeout_is_classified_and_not_retried(write_config: Callable[..., Path]) -> None:
    path = write_config(
        SLEEPER, hyperparameters={"sleep": 30}, compute={"max_run": 1}, local={"grace_period": 1}
    )
    started = time.monotonic()
    _, error, _ = train_locally(path)
    assert isinstance(error, TrainingError)
    assert outcomes(error) == ["timed_out"]
    assert "compute.max_run (1 s) reached" in error.result.attempts[0].reason
    assert time.monotonic() - started < 20  # the 30 s sleep was cut short


def test_reclaims_resume_into_the_same_checkpoints_and_fall_back_on_demand(
    write_config: Callable[..., Path],
) -> None:
    path = write_config(
        SLEEPER,
        hyperparameters={"sleep": 3},
        compute={"spot": True},
        retry={"max_attempts": 3, "on_demand_fallback": True},
        # attempt 1 at its first line of output, attempt 2 after 0.5 s; attempt 3 would be
        # reclaimed too, but it is the on-demand fallback.
        local={"spot_interruptions": ["^started", 0.5, 0.5]},
    )
    _, result, lines = train_locally(path)
    assert outcomes(result) == ["interrupted", "interrupted", "succeeded"]
    assert [a.spot for a in result.attempts] == [True, True, False]
    assert "output matched '^started'" in result.attempts[0].reason
    assert "0.5 s after start" in result.attempts[1].reason
    checkpoints = Path(result.checkpoint_uri)
    # One checkpoint folder across attempts, each attempt saw the earlier ones' files.
    assert sorted(p.name for p in checkpoints.iterdir()) == ["run-1", "run-2", "run-3"]
    assert [(checkpoints / f"run-{n}").read_text() for n in (1, 2, 3)] == ["true", "true", "false"]
    assert [a.resumed_from for a in result.attempts] == [0, 1, 2]
    assert len({a.job_name for a in result.attempts}) == 3
    assert lines.count("got SIGTERM") == 2


def test_a_script_that_ignores_sigterm_is_killed_after_the_grace_period(
    write_config: Callable[..., Path],
) -> None:
    script = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        time.sleep(60)
    """
    path = write_config(
        script,
        compute={"spot": True},
        retry={"max_attempts": 1},
        local={"spot_interruptions": [0.3], "grace_period": 0.5},
    )
    started = time.monotonic()
    _, error, _ = train_locally(path)
    assert outcomes(error) == ["interrupted"]
    assert "no attempts left" in str(error)
    assert time.monotonic() - started < 15


def test_eager_on_demand_goes_on_demand_after_the_first_loss(
    write_config: Callable[..., Path],
) -> None:
    path = write_config(
        SLEEPER,
        compute={"spot": True},
        retry={"max_attempts": 4, "strategy": "eager_on_demand"},
        local={"spot_interruptions": ["^started", "^started"]},
    )
    _, result, _ = train_locally(path)
    assert outcomes(result) == ["interrupted", "succeeded"]
    assert [a.spot for a in result.attempts] == [True, False]


def test_without_fallback_every_attempt_is_spot_and_the_run_fails(
    write_config: Callable[..., Path],
) -> None:
    path = write_config(
        SLEEPER,
        compute={"spot": True},
        retry={"max_attempts": 2, "on_demand_fallback": False},
        local={"spot_interruptions": ["^started", "^started"]},
    )
    _, error, _ = train_locally(path)
    assert isinstance(error, TrainingError)
    assert outcomes(error) == ["interrupted", "interrupted"]


def test_cancelling_the_orchestrator_stops_the_script(
    write_config: Callable[..., Path],
) -> None:
    """A cancelled flow or a task timeout raises inside the poll loop: the process must go."""
    from cloudtrain.backends.local.backend import LocalBackend
    from cloudtrain.config import load_config
    from cloudtrain.training import run_training

    script = """
        import os, time
        print(f"pid={os.getpid()}", flush=True)
        time.sleep(60)
    """
    config = load_config(write_config(script, local={"grace_period": 1}))
    backend = LocalBackend.from_config(config)
    compute = backend.ensure_compute(config)
    pids: list[int] = []

    def cancel_on_pid(line: str) -> None:
        if line.startswith("pid="):
            pids.append(int(line[4:]))
            raise KeyboardInterrupt  # what a cancellation looks like from inside

    with pytest.raises(KeyboardInterrupt):
        run_training(
            backend,
            config,
            run_id="cancelme",
            channels={},
            compute=compute,
            environment=backend.resolve_environment(config, compute),
            log=lambda line: None,
            script_log=cancel_on_pid,
        )
    status = backend.describe_attempt("unit-cancelme-a1")
    assert status.outcome is Outcome.STOPPED
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)
