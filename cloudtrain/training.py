"""The attempt loop: submit, follow, classify, recover; the same for every cloud.

Each attempt is the recovery strategy's decision turned into an ``AttemptSpec`` by
``cloudtrain.planning``, the same way ``cloudtrain plan`` turns it. The decision names a
leg of the run's route (``cloudtrain.route``): a leg is prepared (data, compute,
environment) the first time the route reaches it, and the checkpoint is copied into its
location from the leg before (``cloudtrain.checkpoints``), digests checked.

Before each attempt the budget policy (``cloudtrain.budget``) may move it to on-demand
(the deadline) or stop the run (``over_budget``); while it runs, it is stopped when the
run's cost reaches ``budget.max_cost``. After each attempt the resume check
(``cloudtrain.resumes``) flags an attempt that started from zero although the checkpoint
held files, and stops the run (``no_progress``) after ``retry.no_progress_limit`` of them.

A lost attempt (spot reclaim, no capacity) is resubmitted under a new job name, as the
recovery strategy decides. Whatever interrupts the orchestrator itself (a cancelled
flow, a timeout, Ctrl-C) stops the running attempt before it propagates, so nothing
keeps running or billing behind the user's back.

Every line forwarded from here (the script's output, our own notes, each attempt's reason)
goes through the run's ``Redactor``, so a secret's value never reaches a log or a report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from cloudtrain.backend import Backend, LogSink
from cloudtrain.budget import BudgetPolicy
from cloudtrain.checkpoints import checkpoint_files, copy_checkpoint
from cloudtrain.config import PipelineConfig
from cloudtrain.errors import BackendError, ConfigError, TrainingError
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
from cloudtrain.resumes import AttemptProgress, ResumeCheck
from cloudtrain.route import Preparer, ReadyLeg, prepare_leg, route_legs
from cloudtrain.secrets import Redactor, ResolvedSecrets, redactor_for

if TYPE_CHECKING:
    from cloudtrain.tracking import RunTracker


def run_training(
    backend: Backend,
    config: PipelineConfig,
    *,
    run_id: str,
    channels: Mapping[str, str],
    compute: ComputeTarget,
    environment: ResolvedEnvironment,
    log: LogSink = print,
    script_log: LogSink | None = None,
    secrets: ResolvedSecrets | None = None,
    checkpoint_uri: str | None = None,
    prepare: Preparer | None = None,
    clock: Callable[[], float] = time.time,
    trial: int | None = None,
    tracker: RunTracker | None = None,
) -> TrainingResult:
    """Run attempts until one succeeds or the run stops; raise TrainingError if none did.

    ``backend``, ``channels``, ``compute`` and ``environment`` are the first leg's, its
    stages already run; ``prepare`` readies a later leg of a route (stages 1 to 3 through
    its backend when not given). ``checkpoint_uri`` replaces the first leg's checkpoint
    location: a run that resumes one whose orchestrator crashed keeps its checkpoints
    where the crashed run left them. ``clock`` is the budget's (seconds since the epoch).
    ``trial``: the number of the sweep's trial this run is (it names the jobs).
    ``tracker`` (``cloudtrain.tracking``) is told of each attempt and each output line."""
    secrets = secrets or ResolvedSecrets()
    redact = redactor_for(secrets.values, config.hyperparameters)
    log, script_log = redact.wrap(log), redact.wrap(script_log or log)
    legs = route_legs(config, first=backend)
    first = legs[0]
    ready: dict[int, ReadyLeg] = {
        0: ReadyLeg(
            leg=first,
            channels=dict(channels),
            compute=compute,
            environment=environment,
            checkpoint_uri=checkpoint_uri or first.checkpoint_location(run_id),
            secrets=dict(secrets.values),
        )
    }

    def reach(index: int) -> ReadyLeg:
        if index not in ready:
            leg = legs[index]
            log(f"route: preparing {leg.label}, leg {index + 1} of {len(legs)}")
            ready[index] = (
                prepare(leg)
                if prepare is not None
                else prepare_leg(leg, run_id, secrets=secrets.values, log=log)
            )
        return ready[index]

    loop = _Loop(config, run_id, log, script_log, redact, clock, trial, tracker)
    return loop.run(reach)


class _Loop:
    """One run's attempts, in order; state that lives only while they run."""

    def __init__(
        self,
        config: PipelineConfig,
        run_id: str,
        log: LogSink,
        script_log: LogSink,
        redact: Redactor,
        clock: Callable[[], float],
        trial: int | None = None,
        tracker: RunTracker | None = None,
    ) -> None:
        self.config, self.run_id, self.trial = config, run_id, trial
        self.log, self.script_log, self.redact = log, script_log, redact
        self.started = clock()
        self.clock = clock
        self.budget = BudgetPolicy.from_config(config, started=self.started)
        self.resumes = ResumeCheck(config)
        self.tracker = tracker

    def run(self, reach: Callable[[int], ReadyLeg]) -> TrainingResult:
        config, log = self.config, self.log
        strategy = strategy_for(config)
        current = reach(0)
        result = TrainingResult(self.run_id, current.checkpoint_uri)
        following: NextAttempt | None = strategy.first_attempt()
        while following is not None:
            if following.leg != current.leg.index:
                current = self._move(result, current, self._reach(reach, following, result))
            files_before = checkpoint_files(current, log)
            decision = self.budget.decide(following, current.leg, result, self.clock())
            for note in decision.notes:
                log(note)
            for warning in decision.warnings:
                log(f"warning: {warning}")
                result.warnings.append(self.redact(warning))
            if decision.step is None:
                result.stopped = Outcome.OVER_BUDGET.value
                result.stop_reason = self.redact(decision.reason)
                break
            following = decision.step
            record = self._attempt(following, current, result, files_before)
            record.budget_note = decision.reason
            result.attempts.append(record)
            if self.tracker is not None:
                self.tracker.attempt_ended(record)
            log(f"attempt {record.number} {record.outcome.value}: {record.reason}")
            verdict = self.resumes.after(record, result)  # the final attempt's too
            for warning in verdict.warnings:
                log(f"warning: {warning}")
                result.warnings.append(self.redact(warning))
            if record.outcome is Outcome.SUCCEEDED:
                return result
            if verdict.stop is not None:
                result.stopped, result.stop_reason = "no_progress", verdict.stop
                break
            if record.outcome is Outcome.OVER_BUDGET:
                result.stopped, result.stop_reason = record.outcome.value, record.reason
                break
            following = strategy.recover(following, record.outcome, record.reason)
            if following is not None:
                where = ""
                if following.leg != current.leg.index:
                    where = f" on {config.route[following.leg]} (failover)"
                log(
                    f"resubmitting as attempt {following.number} on {following.capacity} "
                    f"capacity{where}"
                )
        raise TrainingError(self._failure(result), result)

    def _reach(
        self, reach: Callable[[int], ReadyLeg], step: NextAttempt, result: TrainingResult
    ) -> ReadyLeg:
        """The next leg, prepared; a preparation that fails (its compute, its data upload)
        ends the run with the attempts already paid for on the legs before, reported."""
        try:
            return reach(step.leg)
        except (BackendError, ConfigError) as exc:
            cloud = self.config.route[step.leg]
            raise TrainingError(
                f"the route could not reach {cloud} (leg {step.leg + 1}), so attempt "
                f"{step.number} was not started: {exc}",
                result,
            ) from exc

    def _move(self, result: TrainingResult, source: ReadyLeg, target: ReadyLeg) -> ReadyLeg:
        """Fail over: the checkpoint follows the run into the next leg's location. A copy
        that fails (or does not verify) ends the run with its attempts reported: training
        there would start from something other than what the last attempt left."""
        try:
            copy = copy_checkpoint(source, target, log=self.log)
        except (BackendError, ConfigError) as exc:
            raise TrainingError(
                f"the checkpoint could not follow the run from {source.leg.label} to "
                f"{target.leg.label}, so no attempt was started there: {exc}",
                result,
            ) from exc
        result.copies.append(copy)
        result.checkpoint_uri = target.checkpoint_uri
        return target

    def _attempt(
        self, step: NextAttempt, leg: ReadyLeg, result: TrainingResult, files_before: int | None
    ) -> AttemptRecord:
        config = leg.leg.config
        spec = attempt_spec(
            config,
            self.run_id,
            step,
            checkpoint_uri=leg.checkpoint_uri,
            channels=leg.channels,
            compute=leg.compute,
            environment=leg.environment,
            secrets=leg.secrets,
            trial=self.trial,
        )
        self.log(
            f"attempt {spec.number}/{self.config.retry.max_attempts} ({step.capacity}"
            f"{', ' + leg.leg.cloud if len(self.config.route) > 1 else ''}): "
            f"{spec.job_name}, checkpoints in {spec.checkpoint_uri}"
        )
        progress = AttemptProgress(config)
        on_line = progress.feed
        if self.tracker is not None:
            tracker = self.tracker
            tracker.attempt_started(spec.number, spec.spot, leg.leg.cloud)

            def on_line(line: str) -> None:
                progress.feed(line)
                tracker.line(line)

        started = self.clock()
        status = _follow(
            leg.leg.backend,
            config,
            spec,
            self.script_log,
            on_line,
            lambda: self.budget.stop_now(step, leg.leg, result, self.clock() - started),
        )
        assert status.outcome is not None
        copied = result.copies[-1] if result.copies and not _ran_on(result, leg) else None
        return AttemptRecord(
            number=spec.number,
            job_name=spec.job_name,
            spot=spec.spot,
            outcome=status.outcome,
            reason=self.redact(status.reason),
            started_at=status.started_at,
            ended_at=status.ended_at,
            metrics=dict(status.metrics),
            billable_seconds=status.billable_seconds,
            training_seconds=status.training_seconds,
            resumed_from=files_before if files_before is not None else status.resumed_from,
            cloud=leg.leg.cloud,
            leg=leg.leg.index,
            instance_type=config.compute.instance_type,
            instance_count=config.compute.instance_count,
            checkpoint_uri=leg.checkpoint_uri,
            checkpoint_from=copied.source if copied is not None else None,
            progress_start=progress.start,
            progress_end=progress.end,
            epoch_start=progress.first_epoch,
            epoch_end=progress.last_epoch,
            elapsed_seconds=round(self.clock() - started, 3),
            cost_usd=self.budget.attempt_cost(
                leg.leg, spec.spot, status, elapsed=self.clock() - started
            ),
        )

    def _failure(self, result: TrainingResult) -> str:
        if result.stopped is not None:
            done = (
                f"after {len(result.attempts)} attempt(s)"
                if result.attempts
                else "before its first attempt"
            )
            return f"training stopped {done}: {result.stopped}: {result.stop_reason}"
        final = result.attempts[-1]
        why = "not retried" if not final.outcome.retryable else "no attempts left"
        return (
            f"training failed after {len(result.attempts)} attempt(s): attempt {final.number} "
            f"{final.outcome.value} ({final.reason}); {why}"
        )


def _ran_on(result: TrainingResult, leg: ReadyLeg) -> bool:
    """Whether an attempt already ran on this leg (so the last copy is not news to it)."""
    return any(attempt.leg == leg.leg.index for attempt in result.attempts)


def _follow(
    backend: Backend,
    config: PipelineConfig,
    spec: AttemptSpec,
    script_log: LogSink,
    on_line: Callable[[str], None],
    stop_now: Callable[[], str | None],
) -> AttemptStatus:
    handle = backend.submit_attempt(config, spec)
    backend.poll.reset()
    stopped_for: str | None = None
    try:
        while True:
            status = backend.describe_attempt(handle)
            for line in backend.read_logs(handle):
                script_log(line)
                on_line(line)
            if status.ended:
                if stopped_for is not None:  # we stopped it: say why, whatever it reports
                    return _over_budget(status, stopped_for)
                return status
            if stopped_for is None:
                stopped_for = stop_now()
                if stopped_for is not None:
                    script_log(f"stopping {spec.job_name}: {stopped_for}")
                    backend.stop_attempt(handle)
            backend.poll.wait()
    except BaseException:
        # Cancellation, a flow timeout or Ctrl-C: stop the attempt before letting go.
        backend.stop_attempt(handle)
        raise


def _over_budget(status: AttemptStatus, reason: str) -> AttemptStatus:
    if status.outcome is Outcome.SUCCEEDED:  # it finished before the stop took
        return status
    return replace(status, outcome=Outcome.OVER_BUDGET, reason=reason)


__all__ = ["run_training"]
