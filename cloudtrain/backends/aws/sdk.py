"""The Prefect block call the AWS backend depends on, in one place.

No private name is used any more: the credentials block was loaded with
``AwsCredentials.load(name, _sync=True)``, where ``_sync`` is a switch of Prefect's
internal ``async_dispatch`` (prefect/_internal/compatibility), which Prefect means to
remove. The public ``Block.aload`` run through the public
``prefect.utilities.asyncutils.run_coro_as_sync`` returns the block from sync code in any
context, where a bare ``load`` returns a coroutine inside an async flow or event loop.
Checked against prefect 3.9.1 and prefect-aws 0.7.12 (pinned in pyproject.toml);
tests/test_sdk_adapters.py saves and loads a real block through it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

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
