"""``cloudtrain run`` and ``cloudtrain plan``.

Exit codes: 0 success; 1 the run failed; 2 the config or arguments are invalid (one
line naming the field, before anything is created anywhere). Prefect is imported only
by ``run``, so ``plan`` and config errors answer fast.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cloudtrain import jsonout
from cloudtrain.config import PipelineConfig, deprecations_as_lines, load_config
from cloudtrain.errors import CloudtrainError, ConfigError, TrainingError
from cloudtrain.exits import EXIT_FAILED, EXIT_INVALID, EXIT_OK, fail
from cloudtrain.runnable import check_runnable, check_trials

if TYPE_CHECKING:
    from cloudtrain import local_server


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 too; keep its message short
        self.print_usage(sys.stderr)
        raise SystemExit(fail(f"cloudtrain: {message}", EXIT_INVALID))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cloudtrain",
        description="Train one script on SageMaker, "
        "Azure ML or this machine, as a Prefect pipeline.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, text in (
        ("run", "run the pipeline"),
        ("plan", "print the exact requests run would send; offline"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("config", help="pipeline config (YAML)")
        command.add_argument(
            "--cloud", metavar="CLOUD", help="override the config's cloud (a registered one)"
        )
        command.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY.PATH=VALUE",
            help="override a config value (read as YAML); repeatable",
        )
        command.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "run":
            command.add_argument(
                "--force",
                action="store_true",
                help="train even when data, code and config are unchanged",
            )
            command.add_argument(
                "--verbose",
                action="store_true",
                help="show tracebacks on the terminal too (always in the run's log file)",
            )
            command.add_argument(
                "--no-server-reuse",
                dest="server_reuse",
                action="store_false",
                help="run on Prefect's embedded server for this command only, instead of "
                "the local server later runs reuse (also: CLOUDTRAIN_SERVER_REUSE=0)",
            )
    _add_server_commands(commands)
    text = "start a deployment's run through the Prefect API and follow it (for CI)"
    from cloudtrain import trigger

    trigger.add_arguments(commands.add_parser("trigger", help=text, description=text))
    return parser


def _add_server_commands(commands: Any) -> None:
    text = "the local Prefect server that runs reuse (without PREFECT_API_URL)"
    server = commands.add_parser("server", help=text, description=text)
    actions = server.add_subparsers(dest="action", required=True, parser_class=_Parser)
    status = actions.add_parser(
        "status",
        help="where it is, its UI, pid, uptime, idle time left (exit 1: not running)",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    stop = actions.add_parser(
        "stop", help="stop it now (the next run starts a new one); not while runs use it"
    )
    stop.add_argument(
        "--force", action="store_true", help="stop it even while runs use it (they fail)"
    )
    start = actions.add_parser("start", help="start it now (runs start it when needed)")
    start.add_argument("--json", action="store_true", help="machine-readable output")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "server":
        from cloudtrain.server_commands import server_command

        return server_command(
            args.action, getattr(args, "json", False), getattr(args, "force", False)
        )
    if args.command == "trigger":
        from cloudtrain import trigger

        _quiet_prefect_defaults()
        _long_phase()
        return trigger.main(args)
    try:
        with deprecations_as_lines(_stderr):
            config = load_config(args.config, args.overrides, args.cloud)
        from cloudtrain.backend import build_backend

        backend = build_backend(config)
        check_runnable(config, backend)
        check_trials(config, backend)  # a sweep's: each trial's hyperparameters
        if args.command == "plan":
            from cloudtrain.planning import plan, plan_sweep

            planned = plan_sweep(backend, config) if config.sweep else plan(backend, config)
            return _plan(planned, args.json)
        from cloudtrain.secrets import missing_env

        missing = missing_env(config.secrets, os.environ)  # before the flow run exists
        if missing:
            raise ConfigError(problems=missing)
        from cloudtrain import local_server

        server = local_server.settings()
    except ConfigError as exc:
        return fail(exc.describe(), EXIT_INVALID, args.json, exc)
    reuse = server if server.reuse and args.server_reuse else None
    return _run(config, args.json, args.force, args.verbose, reuse)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _plan(plan: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(jsonout.dumps(plan, indent=2))
    else:
        import yaml

        print(yaml.safe_dump(plan, sort_keys=False, default_flow_style=False, width=100))
    return EXIT_OK


def _run(
    config: PipelineConfig,
    as_json: bool,
    force: bool = False,
    verbose: bool = False,
    server: local_server.Settings | None = None,
) -> int:
    _quiet_prefect_defaults()
    from cloudtrain.runlog import run_log

    try:
        with _reused_server(server) as reused:
            flow = _flow_for(config.cloud)  # imports Prefect, which sets up its logging
            with run_log(config, verbose=verbose) as log_file:
                code = _run_flow(flow, config, as_json, force, reused)
    except CloudtrainError as exc:  # the local server could not be started (its home)
        return fail(f"cloudtrain: {exc}", EXIT_FAILED, as_json)
    except KeyboardInterrupt:  # Ctrl-C before the flow ran (waiting for the server, ~15 s)
        return fail("cloudtrain: interrupted before the run started", 130, as_json)
    if code == EXIT_FAILED and log_file is not None and log_file.exists():
        print(f"cloudtrain: the run's log, with tracebacks: {log_file}", file=sys.stderr)
    return code


@contextmanager
def _reused_server(server: local_server.Settings | None) -> Iterator[local_server.Server | None]:
    """The local server this run uses (started when none runs), set as this process's
    PREFECT_API_URL; None with reuse off or when a server is configured (PREFECT_API_URL,
    in the environment or a Prefect profile), which is then used as it is."""
    if server is None:
        yield None
        return
    import prefect.context
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        yield None
        return
    from cloudtrain import local_server

    try:
        reused = local_server.ensure(server, log=_stderr)
    except OSError as exc:  # the home cannot be written: say where
        raise local_server.ServerError(f"cannot use {server.home}: {exc}") from exc
    # Prefect read its settings when it was imported: read them again (for this process,
    # its threads and what it starts), and put the old ones back after (saves ~0.2 s).
    before = prefect.context.GLOBAL_SETTINGS_CONTEXT
    for line in reused.describe():
        _stderr(line)
    os.environ["PREFECT_API_URL"] = reused.api_url
    prefect.context.refresh_global_settings_context()
    try:
        yield reused
    finally:
        local_server.unregister(reused.home)
        os.environ.pop("PREFECT_API_URL", None)
        prefect.context.GLOBAL_SETTINGS_CONTEXT = before


def _run_flow(
    flow: Any,
    config: PipelineConfig,
    as_json: bool,
    force: bool,
    reused: local_server.Server | None = None,
) -> int:
    from prefect.exceptions import TerminationSignal

    if reused is None:
        from cloudtrain.embedded_server import start_guarded

        start_guarded()
    else:
        try:
            reused.wait_ready()  # started while the flows were imported
        except CloudtrainError as exc:
            message = f"cloudtrain: {exc} (--no-server-reuse runs without it)"
            return fail(message, EXIT_FAILED, as_json)
    try:
        _long_phase()
        summary = flow(config=config, force=force)
    except ConfigError as exc:
        return fail(exc.describe(), EXIT_INVALID, as_json, exc)
    except TrainingError as exc:
        if as_json:
            print(jsonout.dumps(exc.summary or {"status": "failed", "error": str(exc)}, indent=2))
        else:
            _print_human(exc.summary, str(exc))
        return EXIT_FAILED
    except CloudtrainError as exc:
        return fail(f"cloudtrain: run failed: {exc}", EXIT_FAILED, as_json)
    except KeyboardInterrupt:
        return fail("cloudtrain: interrupted; the running attempt was stopped", 130, as_json)
    except TerminationSignal:  # Prefect turns SIGTERM into this during a flow run
        return fail("cloudtrain: terminated; the running attempt was stopped", 143, as_json)
    except Exception as exc:
        if reused is None or reused.alive():
            raise
        # The local server went during the run (killed, `server stop --force`): Prefect's
        # client retried, then raised a bare connection error.
        return fail(f"cloudtrain: run failed: {reused.gone(exc)}", EXIT_FAILED, as_json)
    if as_json:
        print(jsonout.dumps(summary, indent=2))
    else:
        _print_human(summary, None)
    return EXIT_OK


def _flow_for(cloud: str) -> Any:
    """The ``<cloud>-training`` flow, imported only when it runs."""
    from flows.pipeline import training_flow

    return training_flow(cloud)


def _quiet_prefect_defaults() -> None:
    """Before Prefect is imported: no analytics (it also causes 'database is locked'
    noise), and no shutdown tracebacks from the embedded server in the user's terminal."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "ERROR")


def _print_human(summary: dict[str, Any] | None, error: str | None) -> None:
    if not summary:
        print(f"failed: {error}")
        return
    if "sweep" in summary:
        _print_sweep(summary)
        return
    if summary["status"] == "skipped":
        print(f"\n{summary['pipeline']} on {summary['cloud']}: skipped, {summary['skip_reason']}")
        model = summary.get("model") or {}
        print(f"  model: {model.get('model_archive') or model.get('model_uri')}")
        return
    attempts = summary["attempts"]
    lost = sum(1 for attempt in attempts if attempt["outcome"] == "interrupted")
    outages = sum(1 for attempt in attempts if attempt["outcome"] == "no_capacity")
    restarted = summary.get("started_from_scratch", 0)
    status = summary["status"]
    head = {"succeeded": "trained", "failed": "FAILED"}.get(status, f"STOPPED ({status})")
    print(
        f"\n{summary['pipeline']} on {summary['cloud']}: {head} in {len(attempts)} "
        f"attempt(s), {lost} interruption(s)"
        + (f" and {outages} without capacity" if outages else "")
        + (" resumed from checkpoints" if not restarted else f" ({restarted} started from scratch)")
    )
    if summary.get("stop_reason"):  # the run stopped itself (over_budget, no_progress): why
        print(f"  stopped: {summary['stop_reason']}")
        error = None  # the line above says it
    route = len(summary.get("route") or []) > 1
    for attempt in attempts:
        where = f"{attempt['cloud']:6} " if route else ""
        print(
            f"  attempt {attempt['number']} {where}{attempt['capacity']:9} "
            f"{attempt['outcome']:11} {attempt['duration_seconds']} s  {attempt['reason']}"
        )
        if attempt.get("budget_note"):
            print(f"    budget: {attempt['budget_note']}")
    for copy in summary.get("checkpoint_copies") or []:
        print(
            f"  checkpoint copied {copy['source_cloud']} -> {copy['target_cloud']}: "
            f"{copy['files']} file(s), sha256 {copy['digest'][:12]}"
        )
    if summary.get("cost_usd") is not None:
        costs = ", ".join(f"{c} ${v:.4f}" for c, v in summary["cost_per_cloud"].items())
        print(f"  estimated cost: ${summary['cost_usd']:.4f} ({costs})")
    for warning in summary.get("warnings") or []:
        print(f"  warning: {warning}")
    for name, value in summary["metrics"].items():
        print(f"  {name} = {value:g}")
    if summary["model"]:
        print(f"  model: {summary['model']['model_archive'] or summary['model']['model_uri']}")
    _print_tracking(summary)
    if error:
        print(f"  error: {error}")


def _print_tracking(summary: dict[str, Any]) -> None:
    """The MLflow run (a sweep's: the parent of its trials' runs), when tracking is on."""
    tracked = summary.get("tracking") or {}
    if tracked.get("run_id"):
        where = tracked.get("url") or f"{tracked['uri']}, experiment {tracked['experiment']}"
        print(f"  mlflow run: {tracked['run_id']} ({where})")


def _print_sweep(summary: dict[str, Any]) -> None:
    """The ranking: one line per trial, best first, then the best trial's model."""
    sweep, best = summary["sweep"], summary["best"]
    print(
        f"\n{summary['pipeline']} on {summary['cloud']}: sweep "
        f"{'done' if summary['status'] == 'succeeded' else 'FAILED'}, "
        f"{sweep['succeeded']} of {sweep['trials']} trial(s) succeeded "
        f"(at most {sweep['max_parallel']} at once), ranked by {sweep['objective']} "
        f"({sweep['goal']})"
    )
    objective = sweep["objective"]
    print(
        f"  {'rank':>4} {'trial':>5}  {'status':11} {objective[:14]:>14} {'attempts':>8} "
        f"{'reclaims':>8} {'cost':>9}  hyperparameters"
    )
    for row in summary["trials"]:
        value = "" if row["objective"] is None else f"{row['objective']:.6g}"
        cost = "" if row["cost_usd"] is None else f"${row['cost_usd']:.4f}"
        values = ", ".join(f"{k}={v}" for k, v in row["values"].items())
        print(
            f"  {row['rank']:>4} {row['trial']:>5}  {row['status']:11} {value:>14} "
            f"{row['attempts']:>8} {row['reclaims']:>8} {cost:>9}  {values}"
        )
        if row["error"]:
            print(f"{'':14}{str(row['error'])[:200]}")
    if summary.get("cost_usd") is not None:
        print(f"  estimated cost of the trials: ${summary['cost_usd']:.4f}")
    for warning in summary.get("warnings") or []:
        print(f"  warning: {warning}")
    if best is not None:
        print(f"  best: trial {best['trial']}, {objective} = {best['objective']:g}")
        print(f"  model: {best['model']}")
    _print_tracking(summary)
    if summary.get("error"):
        print(f"  error: {summary['error']}")


def entrypoint() -> None:
    """The console script. The garbage collector waits while a command starts: importing
    Prefect and the config models makes about a million objects that live as long as the
    process, and collecting among them is wasted work (~0.3 s of a 3 s run). What runs
    for long (a flow, a followed deployment run) turns it back on (``_long_phase``). At
    the end the process's objects are frozen, so the interpreter's shutdown does not
    traverse them again (another ~0.3 s). ``bench/overhead.py`` measures the result."""
    gc.disable()
    code = main()
    gc.freeze()
    sys.exit(code)


def _long_phase() -> None:
    """From here the command may run for hours: collect garbage again, leaving out what
    start-up made (frozen: modules, classes, settings). Nothing when the collector was
    not stopped (``main`` called from Python, as the tests do)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


if __name__ == "__main__":
    entrypoint()
