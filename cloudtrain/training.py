"""The attempt loop: submit, follow, classify, recover; the same for every cloud.

Each attempt is the recovery strategy's decision turned into an ``AttemptSpec`` by
``cloudtrain.planning``, the same way ``cloudtrain plan`` turns it.

A lost attempt (spot reclaim, no capacity) is resubmitted under a new job name into
the same checkpoint location, as the recovery strategy decides. Whatever interrupts
the orchestrator itself (a cancelled flow, a timeout, Ctrl-C) stops the running attempt
before it propagates, so nothing keeps running or billing behind the user's back.

Every line forwarded from here (the script's output, our own notes, each attempt's reason)
goes through the run's ``Redactor``, so a secret's value never reaches a log or a report.
"""

from __future__ import annotations

from cloudtrain.backend import Backend, LogSink
from cloudtrain.config import PipelineConfig
from cloudtrain.errors import TrainingError
from cloudtrain.planning import attempt_spec, strategy_for
from cloudtrain.recovery import NextAttempt, Outcome
from cloudtrain.results import (
    AttemptRecord,
    AttemptSpec,
    AttemptStatus,
    ComputeTarget,
    ResolvedEnvironment,
    TrainingResult,
)
from cloudtrain.secrets import ResolvedSecrets, redactor_for


def run_training(
    backend: Backend,
    config: PipelineConfig,
    *,
    run_id: str,
    channels: dict[str, str],
    compute: ComputeTarget,
    environment: ResolvedEnvironment,
    log: LogSink = print,
    script_log: LogSink | None = None,
    secrets: ResolvedSecrets | None = None,
    checkpoint_uri: str | None = None,
) -> TrainingResult:
    """Run attempts until one succeeds or the strategy stops; raise TrainingError if none did.

    ``checkpoint_uri`` replaces the run's own checkpoint location: a run that resumes one
    whose orchestrator crashed keeps its checkpoints where the crashed run left them."""
    secrets = secrets or ResolvedSecrets()
    redact = redactor_for(secrets.values, config.hyperparameters)
    log, script_log = redact.wrap(log), redact.wrap(script_log or log)
    strategy = strategy_for(config)
    result = TrainingResult(run_id, checkpoint_uri or backend.checkpoint_location(config, run_id))
    following: NextAttempt | None = strategy.first_attempt()
    while following is not None:
        spec = attempt_spec(
            config,
            run_id,
            following,
            checkpoint_uri=result.checkpoint_uri,
            channels=channels,
            compute=compute,
            environment=environment,
            secrets=secrets.values,
        )
        log(
            f"attempt {spec.number}/{config.retry.max_attempts} ({following.capacity}): "
            f"{spec.job_name}, checkpoints in {spec.checkpoint_uri}"
        )
        status = _follow(backend, config, spec, script_log)
        assert status.outcome is not None
        record = AttemptRecord(
            number=spec.number,
            job_name=spec.job_name,
            spot=spec.spot,
            outcome=status.outcome,
            reason=redact(status.reason),
            started_at=status.started_at,
            ended_at=status.ended_at,
            metrics=dict(status.metrics),
            billable_seconds=status.billable_seconds,
            training_seconds=status.training_seconds,
            resumed_from=status.resumed_from,
        )
        result.attempts.append(record)
        log(f"attempt {spec.number} {record.outcome.value}: {record.reason}")
        if record.outcome is Outcome.SUCCEEDED:
            return result
        following = strategy.recover(spec.number, record.outcome, record.reason)
        if following is not None:
            log(f"resubmitting as attempt {following.number} on {following.capacity} capacity")
    final = result.attempts[-1]
    why = "not retried" if not final.outcome.retryable else "no attempts left"
    raise TrainingError(
        f"training failed after {len(result.attempts)} attempt(s): attempt {final.number} "
        f"{final.outcome.value} ({final.reason}); {why}",
        result,
    )


def _follow(
    backend: Backend, config: PipelineConfig, spec: AttemptSpec, script_log: LogSink
) -> AttemptStatus:
    handle = backend.submit_attempt(config, spec)
    backend.poll.reset()
    try:
        while True:
            status = backend.describe_attempt(handle)
            for line in backend.read_logs(handle):
                script_log(line)
            if status.ended:
                return status
            backend.poll.wait()
    except BaseException:
        # Cancellation, a flow timeout or Ctrl-C: stop the attempt before letting go.
        backend.stop_attempt(handle)
        raise
