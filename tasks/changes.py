"""Between upload and training: decide whether anything changed since the last success."""

from __future__ import annotations

from collections.abc import Mapping

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cloudtrain.changes import Decision, Fingerprint, RunRecords, decide, fingerprint
from cloudtrain.config import PipelineConfig
from cloudtrain.results import ChannelData


@task(name="check-for-changes", cache_policy=NO_CACHE)
def check_for_changes(
    config: PipelineConfig,
    channels: Mapping[str, ChannelData],
    force: bool,
    records: str | None = None,
) -> tuple[Decision, Fingerprint | None]:
    """Compare data, code and config digests with the last successful run's; ``records``
    names the record (the pipeline's, or a sweep trial's)."""
    current = fingerprint(config, channels)
    previous = RunRecords(config.work_dir).last_success(records or config.name, config.cloud)
    decision = decide(current, previous, force=force)
    get_run_logger().info("%s: %s", "training" if decision.train else "skipping", decision.reason)
    return decision, current
