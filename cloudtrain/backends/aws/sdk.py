"""The Prefect block call and the sagemaker SDK layout the AWS backend depends on, in one
place.

No private name is used any more: the credentials block was loaded with
``AwsCredentials.load(name, _sync=True)``, where ``_sync`` is a switch of Prefect's
internal ``async_dispatch`` (prefect/_internal/compatibility), which Prefect means to
remove. The public ``Block.aload`` run through the public
``prefect.utilities.asyncutils.run_coro_as_sync`` returns the block from sync code in any
context, where a bare ``load`` returns a coroutine inside an async flow or event loop.
Checked against prefect 3.9.1 and prefect-aws 0.7.12 (pinned in pyproject.toml);
tests/test_sdk_adapters.py saves and loads a real block through it.

The sagemaker SDK's image URI tables (``image_uri_config/*.json``) are read here from the
installed package, without importing ``sagemaker.core`` (~1.9 s); tests/test_sdk_adapters.py
checks them against the SDK's own ``config_for_framework``.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from prefect.blocks.core import Block

B = TypeVar("B", bound="Block")


def load_block(block_class: type[B], name: str) -> B:
    """The saved block ``name`` of ``block_class`` (e.g. prefect-aws ``AwsCredentials``),
    also when called from a coroutine; raises ValueError when there is none.

    Public API: ``aload`` plus ``run_coro_as_sync`` instead of ``load(..., _sync=True)``.
    """
    from prefect.utilities.asyncutils import run_coro_as_sync

    return run_coro_as_sync(block_class.aload(name))


# --- sagemaker: the image URI tables, read without importing sagemaker.core ---------------


@lru_cache(maxsize=1)
def _image_uri_config_folder() -> Path:
    """The folder of JSON tables ``sagemaker.core.image_uris`` reads (one file per framework
    or algorithm: versions, registries per region, repositories, processors).

    Why not the public ``image_uris.config_for_framework``: importing that module runs
    ``sagemaker/core/__init__.py`` and its own imports (JumpStart, shapes, processing, pandas),
    ~1.9 s, for what is a ``json.load`` of ``image_uri_config/<name>.json`` beside it. The
    folder is found through the import system without running the package (``find_spec`` of
    ``sagemaker.core`` imports only the ``sagemaker`` namespace package). The folder's name
    and place are the SDK's layout, not its API: tests/test_sdk_adapters.py compares every
    table with ``config_for_framework``'s answer.
    """
    spec = importlib.util.find_spec("sagemaker.core")
    locations = list(spec.submodule_search_locations or ()) if spec else []
    for location in locations:
        folder = Path(location) / "image_uri_config"
        if folder.is_dir():
            return folder
    raise ModuleNotFoundError("sagemaker-core's image_uri_config tables were not found")


def image_uri_config(name: str) -> dict[str, Any]:
    """What ``sagemaker.core.image_uris.config_for_framework(name)`` returns (a new dict
    each call, as there), without importing the SDK."""
    with (_image_uri_config_folder() / f"{name}.json").open(encoding="utf-8") as file:
        config: dict[str, Any] = json.load(file)
    return config


def image_uri_config_names() -> tuple[str, ...]:
    """The names ``image_uri_config`` reads: every bundled table, sorted (a superset of
    ``image_uris.list_frameworks()``, which leaves out tables without versions)."""
    return tuple(sorted(path.stem for path in _image_uri_config_folder().glob("*.json")))
