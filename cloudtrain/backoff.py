"""Polling delays in one small class: grow from a short first wait to a cap, with jitter.

Cloud defaults: 2 s, 3 s, 4.5 s, ... capped at 30 s, each +-20 %; the first ten polls
cover about 2.5 minutes, after which a poll comes every 30 s. Tests shrink the constants
or pass ``sleep``; never retry a validation error with it, only throttling, capacity and
preemption.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

POLL_INITIAL_SECONDS = 2.0
POLL_MAX_SECONDS = 30.0
POLL_FACTOR = 1.5
POLL_JITTER = 0.2  # fraction of the delay, both ways
sleep_seconds: Callable[[float], None] = time.sleep  # what a Backoff waits with, by default


@dataclass
class Backoff:
    """An endless series of delays; ``wait()`` sleeps for the next one."""

    # Read when a Backoff is made, so tests can monkeypatch the module's constants.
    initial_seconds: float = field(default_factory=lambda: POLL_INITIAL_SECONDS)
    max_seconds: float = field(default_factory=lambda: POLL_MAX_SECONDS)
    factor: float = field(default_factory=lambda: POLL_FACTOR)
    jitter: float = field(default_factory=lambda: POLL_JITTER)
    sleep: Callable[[float], None] = field(default_factory=lambda: sleep_seconds)
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._delays = self.delays()

    def delays(self) -> Iterator[float]:
        delay = self.initial_seconds
        while True:
            spread = delay * self.jitter
            yield max(0.0, delay + self.rng.uniform(-spread, spread))
            delay = min(delay * self.factor, self.max_seconds)

    def wait(self) -> float:
        delay = next(self._delays)
        self.sleep(delay)
        return delay

    def reset(self) -> None:
        """Start again from the short delay, e.g. when an attempt starts running."""
        self._delays = self.delays()
