"""``cloudtrain server status|stop|start``: the local Prefect server that runs reuse
(``cloudtrain.local_server``). Exit codes: 0 done (``status``: it runs); 1 ``status``: it
does not run, or ``start`` failed; 2 a bad setting (CLOUDTRAIN_SERVER_*)."""

from __future__ import annotations

from typing import Any

from cloudtrain import jsonout, local_server
from cloudtrain.errors import CloudtrainError, ConfigError
from cloudtrain.exits import EXIT_FAILED, EXIT_INVALID, EXIT_OK, fail


def server_command(action: str, as_json: bool = False, force: bool = False) -> int:
    try:
        settings = local_server.settings()
    except ConfigError as exc:
        return fail(exc.describe(), EXIT_INVALID, as_json, exc)
    if action == "stop":
        try:
            print(f"cloudtrain: {local_server.stop(settings.home, force)}")
        except (CloudtrainError, OSError) as exc:
            return fail(f"cloudtrain: {exc}", EXIT_FAILED, as_json)
        return EXIT_OK
    if action == "start":
        try:
            local_server.start(settings)
        except (CloudtrainError, OSError) as exc:
            return fail(f"cloudtrain: {exc}", EXIT_FAILED, as_json)
        except KeyboardInterrupt:
            message = "cloudtrain: interrupted; the server starts on (`cloudtrain server stop`)"
            return fail(message, 130, as_json)
        finally:
            local_server.unregister(settings.home)
    described = local_server.status(settings.home)
    if as_json:
        print(jsonout.dumps(described, indent=2))
    else:
        print("\n".join(_lines(described)))
    return EXIT_OK if described["running"] else EXIT_FAILED


def _lines(status: dict[str, Any]) -> list[str]:
    if not status["running"]:
        return [
            f"local Prefect server: not running ({status['reason']})",
            f"  home:      {status['home']}",
            "  the next `cloudtrain run` without PREFECT_API_URL starts it",
        ]
    return [
        "local Prefect server: running",
        f"  UI:        {status['url']}",
        f"  API:       {status['api_url']}  (PREFECT_API_URL for your own flows)",
        f"  pid:       {status['pid']}",
        f"  uptime:    {_duration(status['uptime_seconds'])}",
        f"  idle exit: in {_duration(status['idle_seconds_left'])} without activity "
        f"(limit {status['idle_minutes']:g} min, CLOUDTRAIN_SERVER_IDLE_MINUTES); "
        f"runs in progress: {status['runs_in_progress']}",
        f"  Prefect:   {status['prefect_version']}",
        f"  home:      {status['home']}  (log {status['log']})",
        "  stop it:   cloudtrain server stop",
    ]


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"
