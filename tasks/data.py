"""Stage 1: put every data channel where the job reads it, skipping unchanged content."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cloudtrain.backend import Backend
from cloudtrain.config import PipelineConfig
from cloudtrain.data import upload_channels
from cloudtrain.results import ChannelData
from tasks._common import TRANSIENT_RETRIES, TRANSIENT_RETRY_DELAYS, retry_transient


@task(
    name="upload-data",
    cache_policy=NO_CACHE,
    retries=TRANSIENT_RETRIES,
    retry_delay_seconds=TRANSIENT_RETRY_DELAYS,
    retry_condition_fn=retry_transient,
)
def upload_data(
    backend: Backend, config: PipelineConfig, dataframes: Mapping[str, Any] | None = None
) -> dict[str, ChannelData]:
    logger = get_run_logger()
    channels = upload_channels(backend, config, dataframes, log=logger.info)
    for data in channels.values():
        if data.unchanged:
            logger.info(
                "data %s: unchanged since the last upload (sha256 %s, %d files): nothing copied",
                data.channel,
                data.digest[:12],
                data.files,
            )
        else:
            logger.info(
                "data %s: %d files, %d bytes at %s (%d files, %d bytes copied)",
                data.channel,
                data.files,
                data.bytes,
                data.uri,
                data.copied_files,
                data.copied_bytes,
            )
    return channels
