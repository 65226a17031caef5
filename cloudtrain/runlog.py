"""A run's log file under ``work_dir``, and a terminal without tracebacks for the failures
cloudtrain expects.

Prefect logs a failed task and then its failed flow as ERROR records with the exception
attached (``prefect.task_runs``, ``prefect.flow_runs``), and its console handler on the
root logger prints both tracebacks. For cloudtrain's own errors (a script that failed, a
config refused inside the flow, a cloud error mapped into our tree) a traceback says
nothing the user can act on: the terminal gets the message and where the traceback is,
the file gets every record with its traceback. Only the standard logging API is used (a
FileHandler beside Prefect's handlers, the console handler's formatter wrapped while the
run lasts); Prefect's logging config and what it sends to its API are left as they are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cloudtrain.config import PipelineConfig
from cloudtrain.errors import CloudtrainError

#: Failures shown without a traceback unless --verbose: ours, and being told to stop.
EXPECTED: tuple[type[BaseException], ...] = (CloudtrainError, KeyboardInterrupt)


def log_path(config: PipelineConfig) -> Path:
    """``<work_dir>/logs/<pipeline>-<cloud>-<UTC start>.log``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return config.work_dir / "logs" / f"{config.name}-{config.cloud}-{stamp}.log"


class _QuietFormatter(logging.Formatter):
    """The console's formatter, minus the traceback of an expected failure."""

    def __init__(self, inner: logging.Formatter, where: str) -> None:
        super().__init__()
        self.inner, self.where = inner, where

    def format(self, record: logging.LogRecord) -> str:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, EXPECTED):
            return self.inner.format(record)
        exc_info, exc_text = record.exc_info, record.exc_text
        record.exc_info = record.exc_text = None  # restored below for the other handlers
        try:
            return f"{self.inner.format(record)} ({self.where})"
        finally:
            record.exc_info, record.exc_text = exc_info, exc_text


@contextmanager
def run_log(config: PipelineConfig, *, verbose: bool = False) -> Iterator[Path | None]:
    """While a run lasts: every log record, tracebacks included, into the run's log file
    (yields its path, or None when it cannot be written); and, unless ``verbose``, no
    traceback of an expected failure on the terminal."""
    root = logging.getLogger()
    consoles = [
        handler
        for handler in root.handlers
        if isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
    ]
    path = log_path(config)  # once: the name holds the start time
    file_handler: logging.FileHandler | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    except OSError:  # a work_dir that cannot be made is refused by the flow, in one line
        pass
    if file_handler is not None:
        console_format = next((h.formatter for h in consoles if h.formatter), None)
        file_handler.setFormatter(console_format or logging.Formatter(logging.BASIC_FORMAT))
        root.addHandler(file_handler)
    where = f"traceback in {path}" if file_handler else "--verbose shows the traceback"
    saved = [(handler, handler.formatter) for handler in consoles]
    if not verbose:
        for handler, formatter in saved:
            handler.setFormatter(_QuietFormatter(formatter or logging.Formatter(), where))
    try:
        yield path if file_handler else None
    finally:
        for handler, formatter in saved:
            handler.setFormatter(formatter)
        if file_handler is not None:
            root.removeHandler(file_handler)
            file_handler.close()
