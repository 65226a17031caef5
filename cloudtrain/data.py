"""Stage 1 for every cloud: each channel uploaded through the backend, or a cloud URI
checked and used as it is. The loop is written once; backends upload one channel."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.backend import Backend, LogSink
from cloudtrain.config import PipelineConfig, is_uri
from cloudtrain.results import ChannelData

if TYPE_CHECKING:
    import pandas as pd


def upload_channels(
    backend: Backend,
    config: PipelineConfig,
    dataframes: Mapping[str, pd.DataFrame] | None = None,
    log: LogSink | None = None,
) -> dict[str, ChannelData]:
    """Every channel where the job reads it: the config's paths and URIs, then DataFrames."""
    log = log or (lambda line: None)
    sources: dict[str, Any] = {**config.data, **(dataframes or {})}
    result: dict[str, ChannelData] = {}
    for channel, source in sources.items():
        if isinstance(source, str) and is_uri(source):
            result[channel] = backend.use_data_uri(config, channel, source)
        else:
            path = Path(source) if isinstance(source, str) else source
            result[channel] = backend.upload_channel(config, channel, path, log)
    return result


def uri_channel(channel: str, uri: str) -> ChannelData:
    """A channel used where it already is: nothing copied, no digest cloudtrain vouches for."""
    return ChannelData(
        channel=channel, uri=uri, digest="", files=0, bytes=0, unchanged=True, source=uri
    )
