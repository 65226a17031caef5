"""``cloudtrain trigger``: start a deployment's run through the Prefect API, from CI.

A CI job does not run the pipeline itself: a worker does, next to the data and the
credentials. The job asks the Prefect API for a run of a deployment with some
parameters overridden, follows it, and fails when training fails:

- exit 0: the run completed (a run that skipped training because nothing changed too);
- exit 1: the run failed, crashed or was cancelled, or ``--timeout`` passed first
  (the run is *not* cancelled then: it may be an hour into paid training, so it
  keeps going and the message says how to cancel it);
- exit 2: invalid input: an unknown deployment or parameter, a bad ``--set`` value,
  no API configured. Nothing is created then: the overridden ``config`` is validated
  here, as the flow would validate it, before the run is created.

Overrides are applied to the deployment's own parameters, read from the API, so a run
gets the deployment's config with only the ``--set`` paths changed. Relative paths in
a config are relative to the checkout the worker runs in; they are checked against
the current directory (``--root``), in CI a checkout of the repository: a missing
script is refused, while missing data or an uninstalled framework are only noted,
being the worker machine's business.

What the run produced is read back from its artifacts (``<pipeline>-report``, a
markdown report whose first line is ``# <pipeline> on <cloud>: <status>``, and
``<pipeline>-attempts``, one row per attempt), because a flow's return value is only
kept where result persistence is configured and the worker's disk is usually not
readable from CI. Prefect is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from cloudtrain.backoff import Backoff
from cloudtrain.config import (
    apply_override,
    check_runnable,
    unknown_name_message,
    validate_config,
)
from cloudtrain.errors import ConfigError

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2

#: Following a run: 1 s, 1.5 s, 2.3 s, ... capped at 10 s (about 8 polls in the first
#: minute, then 6 a minute), from 1 s again whenever the state changes. Module
#: constants, so tests can shrink them.
POLL_INITIAL_SECONDS = 1.0
POLL_MAX_SECONDS = 10.0
POLL_FACTOR = 1.5
#: A run still waiting this long for a worker gets one hint about the work pool.
WAITING_HINT_SECONDS = 30.0
#: After the final state, logs can still be on their way from the worker (it ships
#: them in batches, every ~2 s): read them up to the flow's last line, at most this long.
LOG_DRAIN_SECONDS = 5.0
LOG_PAGE = 200
LOG_LATE_SECONDS = 10.0  # how much earlier than the newest line printed a line may arrive

_REPORT_HEADING = re.compile(r"^#\s+(?P<pipeline>\S+) on (?P<cloud>\S+):\s*(?P<status>\w+)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's options; ``cloudtrain.cli`` owns the parser."""
    parser.add_argument(
        "deployment", metavar="DEPLOYMENT", help="FLOW/DEPLOYMENT, e.g. local-training/smoke"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a parameter (read as YAML): config.hyperparameters.epochs=3, "
        "force=true; repeatable",
    )
    parser.add_argument(
        "--wait", action="store_true", help="follow the run to its end; the exit code says how"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="follow for at most S seconds, then exit 1; the run continues (implies --wait)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("."),
        help="checkout that the config's relative paths are checked in (default: .)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")


# --- parameters: overrides and validation, before anything is created -----------------


def build_parameters(
    defaults: Mapping[str, Any],
    schema: Mapping[str, Any] | None,
    overrides: Sequence[str],
    flow_name: str,
) -> dict[str, Any]:
    """The deployment's parameters with ``--set`` applied; only known parameters.

    The returned config stays the raw mapping, not a validated model: the flow resolves
    its relative paths in the worker's checkout, not here (see ``check_config``).
    """
    parameters = copy.deepcopy(dict(defaults))
    known = sorted((schema or {}).get("properties") or {})
    for override in overrides:
        key, sep, _ = override.partition("=")
        name = key.strip().split(".")[0]
        if sep and known and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"--set {key.strip()}",
                f"{flow_name} has no parameter {name!r} (parameters: {', '.join(known)}){hint}",
            )
        apply_override(parameters, override)
    return parameters


def check_config(raw: Mapping[str, Any], flow_name: str, root: Path) -> list[str]:
    """Validate as the flow will: the flow pins the cloud, then its backend checks it.

    Values are refused; what only the worker's machine can answer becomes a returned
    note instead. Data is often generated or mounted there (the digits deployments
    prepare theirs in a pull step), so a data path missing here is a note and the rest
    is still checked, with the checkout root standing in for it. Whether the framework
    is installed is the worker's interpreter's business (it is the backend's last
    check). Code is in the repository: a missing script is an error.
    """
    from cloudtrain.backend import build_backend
    from cloudtrain.backends import is_cloud

    values: dict[str, Any] = copy.deepcopy(dict(raw))
    cloud = flow_name.removesuffix("-training")
    if is_cloud(cloud):
        values["cloud"] = cloud
    base = root.resolve()
    notes: list[str] = []
    while True:
        try:
            config = validate_config(values, base_dir=base)
            check_runnable(config, build_backend(config))
            return notes
        except ConfigError as exc:
            data = values.get("data")
            channel = exc.field.removeprefix("data.")
            if (
                exc.field.startswith("data.")
                and "does not exist" in exc.message
                and isinstance(data, dict)
                and data.get(channel) != str(base)
            ):
                notes.append(
                    f"config.{exc.field}: {data[channel]} is not in {base}; "
                    "the run fails unless the worker's checkout has it"
                )
                data[channel] = str(base)  # an existing folder: go on checking the rest
                continue
            if exc.field == "environment.framework" and "is not installed" in exc.message:
                notes.append(
                    f"config.environment.framework: {exc.message.partition(' for ')[0]} "
                    "here; the worker's interpreter must have it"
                )
                return notes
            field = f"config.{exc.field}" if exc.field else "config"
            raise ConfigError(field, exc.message) from None


# --- the run's outcome ------------------------------------------------------------------


@dataclass
class Outcome:
    """Where a triggered run ended up, and what it reported."""

    deployment: str
    flow_run_id: str
    flow_run_name: str
    url: str
    parameters: dict[str, Any]
    state: str | None = None  # the state type: COMPLETED, FAILED, ...; None when not followed
    state_name: str | None = None  # what the UI shows: Completed, Crashed, Late, ...
    message: str | None = None
    timed_out: bool = False
    report: dict[str, Any] | None = None  # status, markdown, attempts

    @property
    def exit_code(self) -> int:
        if self.state is None:
            return EXIT_OK  # created, not followed
        return EXIT_OK if self.state == "COMPLETED" and not self.timed_out else EXIT_FAILED

    @property
    def status(self) -> str | None:
        """The pipeline's own word: succeeded, skipped, failed (None without a report)."""
        return self.report["status"] if self.report else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "flow_run_id": self.flow_run_id,
            "flow_run_name": self.flow_run_name,
            "url": self.url,
            "state": self.state,
            "state_name": self.state_name,
            "message": self.message,
            "timed_out": self.timed_out,
            "status": self.status,
            "parameters": self.parameters,
            "report": self.report,
        }


def report_status(markdown: str) -> str | None:
    """``succeeded`` from ``# digits-sgd on local: succeeded``."""
    match = _REPORT_HEADING.match(markdown.lstrip())
    return match.group("status") if match else None


def ui_url(flow_run_id: UUID | str) -> str:
    """Where a person watches the run: PREFECT_UI_URL, else the API URL without /api."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    base = settings.ui_url or str(settings.api.url or "").removesuffix("/api")
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}"


# --- the command ------------------------------------------------------------------------


def _progress(text: str) -> None:
    """Progress and logs go to stderr; stdout holds the result (JSON with --json)."""
    print(text, file=sys.stderr, flush=True)


def main(args: argparse.Namespace) -> int:
    """Run ``cloudtrain trigger`` with parsed arguments; returns the exit code."""
    flow_name, slash, deployment_name = args.deployment.partition("/")
    if not slash or not flow_name or not deployment_name or "/" in deployment_name:
        return _fail(
            f"cloudtrain: invalid deployment {args.deployment!r}: "
            "expected FLOW/DEPLOYMENT, e.g. local-training/smoke",
            EXIT_INVALID,
            args.json,
        )
    if args.timeout is not None and args.timeout <= 0:
        return _fail("cloudtrain: --timeout must be > 0 seconds", EXIT_INVALID, args.json)
    wait = args.wait or args.timeout is not None

    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        return _fail(
            "cloudtrain: PREFECT_API_URL is not set: trigger starts runs of deployments on a "
            "Prefect server (prefect server start) or Prefect Cloud",
            EXIT_INVALID,
            args.json,
        )
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    try:
        with get_client(sync_client=True) as client:
            try:
                deployment = client.read_deployment_by_name(args.deployment)
            except ObjectNotFound:
                return _fail(
                    "cloudtrain: " + _unknown_deployment(client, args.deployment),
                    EXIT_INVALID,
                    args.json,
                )
            parameters = build_parameters(
                deployment.parameters,
                deployment.parameter_openapi_schema,
                args.overrides,
                flow_name,
            )
            if isinstance(parameters.get("config"), dict):
                for note in check_config(parameters["config"], flow_name, args.root):
                    _progress(f"cloudtrain: note: {note}")
            try:
                flow_run = client.create_flow_run_from_deployment(
                    deployment.id, parameters=parameters
                )
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code in (409, 422):  # the server's schema check
                    detail = _detail(exc.response)
                    return _fail(
                        f"cloudtrain: invalid parameters: {detail}", EXIT_INVALID, args.json
                    )
                raise
            outcome = Outcome(
                deployment=args.deployment,
                flow_run_id=str(flow_run.id),
                flow_run_name=flow_run.name,
                url=ui_url(flow_run.id),
                parameters=parameters,
            )
            _progress(f"{args.deployment}: flow run {flow_run.name!r} ({flow_run.id})")
            _progress(f"watch it at {outcome.url}")
            if wait:
                try:
                    _follow(client, flow_run, outcome, args.timeout, deployment)
                except KeyboardInterrupt:
                    return _fail(
                        f"cloudtrain: stopped following; the run continues: {outcome.url}",
                        130,
                        args.json,
                    )
    except ConfigError as exc:
        return _fail(f"cloudtrain: invalid parameters: {exc}", EXIT_INVALID, args.json)
    except (httpx.HTTPError, PrefectHTTPStatusError) as exc:
        api = get_current_settings().api.url
        return _fail(f"cloudtrain: the Prefect API at {api} failed: {exc}", EXIT_FAILED, args.json)
    _print_outcome(outcome, args.json)
    return outcome.exit_code


def _follow(
    client: SyncPrefectClient,
    flow_run: FlowRun,
    outcome: Outcome,
    timeout: float | None,
    deployment: Any,
) -> None:
    """Poll the run with backoff until it is final or the timeout passes; stream its logs."""
    started = time.monotonic()
    backoff = Backoff(
        initial_seconds=POLL_INITIAL_SECONDS,
        max_seconds=POLL_MAX_SECONDS,
        factor=POLL_FACTOR,
        jitter=0.1,
    )
    delays = backoff.delays()
    logs = _LogFollower(client, flow_run.id)
    seen_state: str | None = None
    hinted = False
    while True:
        flow_run = client.read_flow_run(flow_run.id)
        state = flow_run.state
        if state is not None and state.name != seen_state:
            seen_state = state.name
            _progress(f"state: {state.name}")
            delays = backoff.delays()  # things move: look again soon
        for line in logs.new_lines():
            _progress(line)
        if state is not None and state.is_final():
            break
        waited = time.monotonic() - started
        if timeout is not None and waited >= timeout:
            outcome.timed_out = True
            break
        if not hinted and waited >= WAITING_HINT_SECONDS and state and state.is_scheduled():
            hinted = True
            _progress(_waiting_hint(client, deployment))
        delay = next(delays)
        if timeout is not None:  # cut short, so the timeout is noticed on time
            delay = max(0.0, min(delay, timeout - waited))
        backoff.sleep(delay)
    if state is not None and state.is_final():
        for line in logs.drain():
            _progress(line)
    outcome.state = state.type.value if state is not None else None
    outcome.state_name = state.name if state is not None else None
    outcome.message = state.message if state is not None else None
    outcome.flow_run_name = flow_run.name
    outcome.report = _read_report(client, flow_run.id, outcome.parameters)


def _waiting_hint(client: SyncPrefectClient, deployment: Any) -> str:
    pool = deployment.work_pool_name or "?"
    hint = f"still waiting for a worker after {WAITING_HINT_SECONDS:g} s"
    try:
        work_pool = client.read_work_pool(pool)
    except Exception:  # a hint must never fail the command
        return hint
    if work_pool.is_paused:
        return f"{hint}: work pool {pool!r} is paused (prefect work-pool resume {pool})"
    status = getattr(work_pool.status, "value", work_pool.status)
    if status != "READY":
        return f"{hint}: no worker polls work pool {pool!r} (prefect worker start --pool {pool})"
    return f"{hint} (work pool {pool!r} has a worker; it may be busy)"


class _LogFollower:
    """The run's log lines, each once, as they reach the API.

    Each read goes back LOG_LATE_SECONDS before the newest line printed, because the
    flow run's and the worker's logs reach the API in separate batches; ids keep a line
    from being printed twice.
    """

    def __init__(self, client: SyncPrefectClient, flow_run_id: UUID) -> None:
        self.client = client
        self.flow_run_id = flow_run_id
        self.seen: set[UUID] = set()
        self.newest: Any = None  # the newest timestamp printed so far
        self.finished = False  # the flow run's own "Finished in state" line was printed

    def new_lines(self) -> Iterator[str]:
        from datetime import timedelta

        from prefect.client.schemas.filters import (
            LogFilter,
            LogFilterFlowRunId,
            LogFilterTimestamp,
        )
        from prefect.client.schemas.sorting import LogSort

        log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[self.flow_run_id]))
        if self.newest is not None:
            since = self.newest - timedelta(seconds=LOG_LATE_SECONDS)
            log_filter.timestamp = LogFilterTimestamp(after_=since)
        offset = 0
        while True:
            try:
                page = self.client.read_logs(
                    log_filter=log_filter, limit=LOG_PAGE, offset=offset, sort=LogSort.TIMESTAMP_ASC
                )
            except Exception:  # logs are a courtesy: the run's state decides the exit code
                return
            for log in page:
                if log.id in self.seen:
                    continue
                self.seen.add(log.id)
                self.newest = max(self.newest, log.timestamp) if self.newest else log.timestamp
                if log.task_run_id is None and log.message.startswith("Finished in state"):
                    self.finished = True
                yield _log_line(log)
            if len(page) < LOG_PAGE:
                return
            offset += len(page)

    def drain(self) -> Iterator[str]:
        """After the final state: the lines still on their way, up to the engine's last
        one (``Finished in state ...`` from the flow run itself), at most LOG_DRAIN_SECONDS."""
        deadline = time.monotonic() + LOG_DRAIN_SECONDS
        while not self.finished:
            yield from self.new_lines()
            if self.finished or time.monotonic() >= deadline:
                return
            time.sleep(0.5)


_LEVELS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}


def _log_line(log: Any) -> str:
    """One line per log: Prefect's tracebacks repeat the error of the line that carries
    them, so only their size is printed (the UI has them whole)."""
    first, *rest = str(log.message).splitlines() or [""]
    more = f" [+{len(rest)} lines: traceback in the UI]" if rest else ""
    level = _LEVELS.get(log.level, str(log.level))
    return f"{log.timestamp:%H:%M:%S} | {level:7} | {first}{more}"


def _read_report(
    client: SyncPrefectClient, flow_run_id: UUID, parameters: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The run's ``<pipeline>-report`` and ``<pipeline>-attempts`` artifacts, newest first."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.client.schemas.sorting import ArtifactSort

    config = parameters.get("config")
    pipeline = config.get("name") if isinstance(config, dict) else None
    try:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
            sort=ArtifactSort.CREATED_DESC,
        )
    except Exception:  # the state already decided the exit code; the report is extra
        return None
    by_key: dict[str, Any] = {}
    for artifact in artifacts:  # newest first: keep the first of each key
        if artifact.key:
            by_key.setdefault(artifact.key, artifact)
    report = by_key.get(f"{pipeline}-report") if pipeline else None
    if report is None:
        report = next((a for k, a in by_key.items() if k.endswith("-report")), None)
    if report is None or not isinstance(report.data, str):
        return None
    attempts_key = (report.key or "").removesuffix("-report") + "-attempts"
    attempts: Any = by_key[attempts_key].data if attempts_key in by_key else None
    if isinstance(attempts, str):
        try:
            attempts = json.loads(attempts)
        except ValueError:
            attempts = None
    return {
        "status": report_status(report.data),
        "key": report.key,
        "markdown": report.data,
        "attempts": attempts if isinstance(attempts, list) else [],
    }


def _unknown_deployment(client: SyncPrefectClient, name: str) -> str:
    """``unknown deployment 'x/y'; deployments: ...``, with the closest name when one is."""
    try:
        flows = {flow.id: flow.name for flow in client.read_flows()}
        names = sorted(f"{flows.get(d.flow_id, '?')}/{d.name}" for d in client.read_deployments())
    except Exception:
        names = []
    if not names:
        return f"unknown deployment {name!r}: this Prefect API has none (prefect deploy --all)"
    return unknown_name_message("deployment", name, names)


def _detail(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip().splitlines()[0] if response.text.strip() else "rejected"
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return " ".join(str(detail).split())


def _print_outcome(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        print(json.dumps(outcome.to_dict(), indent=2, default=str))
        return
    print(outcome.url)
    if outcome.state is None:
        print(f"{outcome.flow_run_name}: scheduled (not followed; --wait follows it)")
        return
    status = f" ({outcome.status})" if outcome.status else ""
    print(f"{outcome.flow_run_name}: {outcome.state_name}{status}")
    if outcome.timed_out:
        print(
            f"  not finished when --timeout passed; the run continues. Cancel it with: "
            f"prefect flow-run cancel {outcome.flow_run_id}"
        )
    elif outcome.exit_code != EXIT_OK and outcome.message:
        print(f"  {outcome.message}")


def _fail(message: str, code: int, as_json: bool) -> int:
    if as_json:
        status = "invalid" if code == EXIT_INVALID else "failed"
        print(json.dumps({"status": status, "error": message}))
    print(message, file=sys.stderr)
    return code
