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

What the run produced is read back from its artifacts: the status from
``<pipeline>-outcome``, a one-row table of data, so rewording the markdown report
(``<pipeline>-report``, for people) cannot change what CI sees; the report and
``<pipeline>-attempts`` (one row per attempt) ride along. Artifacts, because a flow's
return value is only kept where result persistence is configured and the worker's disk
is usually not readable from CI. Prefect is imported only when the command runs.

The modules:

- ``command``: the subcommand's options, ``main`` and what it prints;
- ``parameters``: the deployment's parameters with ``--set`` applied, and the config
  checked as the flow will check it, before anything is created;
- ``follow``: polling the run with backoff until it ends, its logs, the waiting hint;
- ``outcome``: ``TriggeredRun`` (where the run ended up, the exit code) and reading
  back what the run reported.
"""

from __future__ import annotations

from cloudtrain.exits import EXIT_FAILED, EXIT_INVALID, EXIT_OK
from cloudtrain.trigger.command import add_arguments, main
from cloudtrain.trigger.outcome import TriggeredRun
from cloudtrain.trigger.parameters import build_parameters, check_config

__all__ = [
    "EXIT_FAILED",
    "EXIT_INVALID",
    "EXIT_OK",
    "TriggeredRun",
    "add_arguments",
    "build_parameters",
    "check_config",
    "main",
]
