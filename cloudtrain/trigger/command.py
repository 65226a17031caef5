"""The ``cloudtrain trigger`` command: its options, ``main``, and what it prints.

Progress and the run's logs go to stderr, the result to stdout (JSON with ``--json``),
so a CI step can keep the result in a file and still show the logs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from cloudtrain import jsonout
from cloudtrain.config import deprecations_as_lines, unknown_name_message
from cloudtrain.errors import ConfigError
from cloudtrain.exits import EXIT_FAILED, EXIT_INVALID, EXIT_OK, fail
from cloudtrain.trigger.follow import follow_run
from cloudtrain.trigger.outcome import TriggeredRun, read_report
from cloudtrain.trigger.parameters import build_parameters, check_config

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient


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


def main(args: argparse.Namespace) -> int:
    """Run ``cloudtrain trigger`` with parsed arguments; returns the exit code."""
    flow_name, slash, deployment_name = args.deployment.partition("/")
    if not slash or not flow_name or not deployment_name or "/" in deployment_name:
        return fail(
            f"cloudtrain: invalid deployment {args.deployment!r}: "
            "expected FLOW/DEPLOYMENT, e.g. local-training/smoke",
            EXIT_INVALID,
            args.json,
        )
    if args.timeout is not None and args.timeout <= 0:
        return fail("cloudtrain: --timeout must be > 0 seconds", EXIT_INVALID, args.json)
    wait = args.wait or args.timeout is not None

    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        return fail(
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
                return fail(
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
                with deprecations_as_lines(_progress):
                    notes = check_config(parameters["config"], flow_name, args.root)
                for note in notes:
                    _progress(f"cloudtrain: note: {note}")
            try:
                flow_run = client.create_flow_run_from_deployment(
                    deployment.id, parameters=parameters
                )
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code in (409, 422):  # the server's schema check
                    detail = _detail(exc.response)
                    return fail(
                        f"cloudtrain: invalid parameters: {detail}", EXIT_INVALID, args.json
                    )
                raise
            run = TriggeredRun(
                deployment=args.deployment,
                flow_run_id=str(flow_run.id),
                flow_run_name=flow_run.name,
                url=ui_url(flow_run.id),
                parameters=parameters,
            )
            _progress(f"{args.deployment}: flow run {flow_run.name!r} ({flow_run.id})")
            _progress(f"watch it at {run.url}")
            if wait:
                try:
                    flow_run, run.timed_out = follow_run(
                        client, flow_run, args.timeout, deployment, _progress
                    )
                except KeyboardInterrupt:
                    return fail(
                        f"cloudtrain: stopped following; the run continues: {run.url}",
                        130,
                        args.json,
                    )
                state = flow_run.state
                run.state = state.type.value if state is not None else None
                run.state_name = state.name if state is not None else None
                run.message = state.message if state is not None else None
                run.flow_run_name = flow_run.name
                run.report = read_report(client, flow_run.id, parameters)
    except ConfigError as exc:
        return fail(exc.describe("parameters"), EXIT_INVALID, args.json, exc)
    except (httpx.HTTPError, PrefectHTTPStatusError) as exc:
        api = get_current_settings().api.url
        return fail(f"cloudtrain: the Prefect API at {api} failed: {exc}", EXIT_FAILED, args.json)
    _print_run(run, args.json)
    return run.exit_code


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


def ui_url(flow_run_id: UUID | str) -> str:
    """Where a person watches the run: PREFECT_UI_URL, else the API URL without /api."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    base = settings.ui_url or str(settings.api.url or "").removesuffix("/api")
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}"


def _progress(text: str) -> None:
    """Progress and logs go to stderr; stdout holds the result (JSON with --json)."""
    print(text, file=sys.stderr, flush=True)


def _print_run(run: TriggeredRun, as_json: bool) -> None:
    if as_json:
        print(jsonout.dumps(run.to_dict(), indent=2))
        return
    print(run.url)
    if run.state is None:
        print(f"{run.flow_run_name}: scheduled (not followed; --wait follows it)")
        return
    status = f" ({run.status})" if run.status else ""
    print(f"{run.flow_run_name}: {run.state_name}{status}")
    if run.timed_out:
        print(
            f"  not finished when --timeout passed; the run continues. Cancel it with: "
            f"prefect flow-run cancel {run.flow_run_id}"
        )
    elif run.exit_code != EXIT_OK and run.message:
        print(f"  {run.message}")
