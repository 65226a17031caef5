"""A multi-process job on this machine: ``hosts x processes_per_host`` ranks of one script.

What torchrun (or mpirun) and SageMaker's hosts do for a distributed job, done with the
standard library so that a distributed script can be tried before paying for nodes, with
no Docker and no torch. Run by path under the supervisor (``python -P launcher.py ...``),
so it imports nothing of cloudtrain; the backend imports it for the same names and
variables it shows in ``plan``.

``--type T --hosts N --processes-per-host P --grace S [--status FILE] -- COMMAND...``
    Starts ``N x P`` copies of COMMAND, rank ``r`` on simulated host ``algo-(r // P + 1)``,
    each with the variables ``rank_environment`` gives it: ``SM_HOSTS`` and
    ``SM_CURRENT_HOST`` always; with torchrun the variables torchrun sets (``WORLD_SIZE``,
    ``RANK``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``/``NODE_RANK``,
    ``MASTER_ADDR=127.0.0.1``, ``MASTER_PORT``: a free port chosen at each start); with mpi
    Open MPI's ``OMPI_COMM_WORLD_*`` and the torch ones too (a script reads its rank from
    either; there is no MPI runtime here). Type none is SageMaker's default for several
    instances: the script once per host, hosts only.

Every line a rank prints goes to our stdout with ``[algo-H rank R] `` in front, whole
(lines of different ranks never mix). When a rank fails (exits non-zero while nobody asked
the group to stop) the others get SIGTERM, SIGKILL after the grace period, the failure is
written to ``--status`` as JSON, and we exit with the rank's code. A reclaim or ``max_run``
is the supervisor's SIGTERM to the whole tree, every rank included: we do not signal the
ranks again (a script's SIGTERM handler runs once, as on SageMaker), we only stop counting
their exits as failures and keep relaying their output until they end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

TYPES = ("none", "torchrun", "mpi")
MASTER_ADDR = "127.0.0.1"
NOTE = "[cloudtrain] "
TICK_SECONDS = 0.1
READ_BYTES = 1 << 16
#: A rank's line longer than this is relayed in pieces (each with the rank's mark).
MAX_LINE_BYTES = 1 << 20
#: After the last rank ended, how long its output may still take to arrive.
DRAIN_SECONDS = 2.0
#: ``[algo-2 rank 3] ``: the mark on every line of a rank's output.
RANK_PREFIX = re.compile(r"\[algo-([0-9]+) rank ([0-9]+)\] ")


def host_names(hosts: int) -> list[str]:
    """SageMaker's names for the hosts of a job: algo-1, algo-2, ..."""
    return [f"algo-{index + 1}" for index in range(hosts)]


def prefix(hosts: int, processes_per_host: int, rank: int) -> str:
    """The mark in front of every line rank ``rank`` prints."""
    return f"[{host_names(hosts)[rank // processes_per_host]} rank {rank}] "


def rank_zero_text(line: str) -> str | None:
    """A line as rank 0 printed it (its mark removed); None for another rank's line; a line
    of no rank (a single-process job, cloudtrain's own notes) as it is. Metrics, progress
    and reclaim patterns read rank 0 only, as one process's view of the job."""
    match = RANK_PREFIX.match(line)
    if match is None:
        return line
    return line[match.end() :] if match.group(2) == "0" else None


def rank_environment(
    kind: str, hosts: int, processes_per_host: int, rank: int, master_port: int | str
) -> dict[str, str]:
    """The variables rank ``rank`` gets on top of the script contract's."""
    names = host_names(hosts)
    node, local = divmod(rank, processes_per_host)
    env = {
        "SM_HOSTS": json.dumps(names),
        "SM_CURRENT_HOST": names[node],
        "SM_RESOURCE_CONFIG": json.dumps(
            {"current_host": names[node], "hosts": names, "network_interface_name": "lo"}
        ),
    }
    if kind == "none":
        return env
    world = hosts * processes_per_host
    env |= {  # as torchrun sets them for each worker
        "WORLD_SIZE": str(world),
        "RANK": str(rank),
        "LOCAL_RANK": str(local),
        "LOCAL_WORLD_SIZE": str(processes_per_host),
        "GROUP_RANK": str(node),
        "NODE_RANK": str(node),
        "ROLE_RANK": str(rank),
        "ROLE_WORLD_SIZE": str(world),
        "MASTER_ADDR": MASTER_ADDR,
        "MASTER_PORT": str(master_port),
    }
    if kind == "mpi":  # as Open MPI's mpirun sets them for each process
        env |= {
            "OMPI_COMM_WORLD_RANK": str(rank),
            "OMPI_COMM_WORLD_SIZE": str(world),
            "OMPI_COMM_WORLD_LOCAL_RANK": str(local),
            "OMPI_COMM_WORLD_LOCAL_SIZE": str(processes_per_host),
            "OMPI_COMM_WORLD_NODE_RANK": str(node),
            "OMPI_UNIVERSE_SIZE": str(world),
        }
    return env


def free_port() -> int:
    """A TCP port nobody listens on now, for this start's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((MASTER_ADDR, 0))
        return int(probe.getsockname()[1])


def _write(data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(1, view)
        except InterruptedError:
            continue
        except BrokenPipeError:
            return  # nobody reads any more: the supervisor keeps the log
        view = view[written:]


def note(text: str) -> None:
    _write((NOTE + text + "\n").encode())


class Group:
    """The ranks of one start, their output, and how the group ends."""

    def __init__(
        self, kind: str, hosts: int, processes_per_host: int, grace: float, status: str | None
    ) -> None:
        self.kind, self.hosts, self.per_host = kind, hosts, processes_per_host
        self.grace, self.status = grace, status
        self.ranks: list[subprocess.Popen[bytes]] = []
        self.prefixes: list[bytes] = []
        self.partial: dict[int, bytes] = {}
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.stop_requested = False  # set by a signal, acted on by the loop
        self.kill_at: float | None = None
        self.failure: tuple[int, int] | None = None  # (rank, exit code)

    def start(self, command: Sequence[str]) -> None:
        port = free_port() if self.kind != "none" else ""
        world = self.hosts * self.per_host
        where = f", MASTER_ADDR={MASTER_ADDR} MASTER_PORT={port}" if port else ""
        note(
            f"launcher: {self.kind}, {self.hosts} host(s) x {self.per_host} process(es) = "
            f"{world} rank(s){where}"
        )
        for rank in range(world):
            if self.stop_requested:
                break
            env = {
                **os.environ,
                **rank_environment(self.kind, self.hosts, self.per_host, rank, port),
            }
            process = subprocess.Popen(
                list(command),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            assert process.stdout is not None
            os.set_blocking(process.stdout.fileno(), False)
            self.selector.register(process.stdout.fileno(), selectors.EVENT_READ, rank)
            self.ranks.append(process)
            self.prefixes.append(prefix(self.hosts, self.per_host, rank).encode())

    def stop(self, reason: str | None = None) -> None:
        """SIGTERM to every rank still running; SIGKILL follows after the grace period."""
        if self.stopping:
            return
        self.stopping = True
        self.kill_at = time.monotonic() + self.grace
        if reason:
            note(reason)
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        for process in self.ranks:
            if process.poll() is None:
                try:
                    process.send_signal(sig)
                except ProcessLookupError:
                    pass

    def run(self) -> int:
        """Relay output until every rank ended and its output is read; the group's code."""
        drain_until: float | None = None
        while self.selector.get_map():
            for key, _ in self.selector.select(TICK_SECONDS):
                self._read(key.fd, key.data)
            if self.stop_requested:  # the supervisor signalled every rank itself
                self.stopping = True
            self._check_ranks()
            if self.kill_at is not None and time.monotonic() >= self.kill_at:
                self._signal(signal.SIGKILL)
            if all(process.poll() is not None for process in self.ranks):
                drain_until = drain_until or time.monotonic() + DRAIN_SECONDS
                if time.monotonic() >= drain_until:  # a rank's child holds its output open
                    break
        for rank, rest in sorted(self.partial.items()):
            if rest:
                _write(self.prefixes[rank] + rest + b"\n")
        for process in self.ranks:
            process.wait()
        self._check_ranks()
        return self._exit_code()

    def _read(self, fd: int, rank: int) -> None:
        try:
            data = os.read(fd, READ_BYTES)
        except BlockingIOError:
            return
        if not data:
            self.selector.unregister(fd)
            return
        data = self.partial.pop(rank, b"") + data
        end = data.rfind(b"\n") + 1
        if len(data) - end >= MAX_LINE_BYTES:  # no end of line in sight: relay it as one
            data, end = data + b"\n", len(data) + 1
        if end < len(data):
            self.partial[rank] = data[end:]
        if end:
            mark = self.prefixes[rank]
            lines = data[:end].split(b"\n")[:-1]
            _write(b"".join(mark + line + b"\n" for line in lines))

    def _check_ranks(self) -> None:
        if self.stopping or self.failure is not None:
            return
        for rank, process in enumerate(self.ranks):
            code = process.poll()
            if code is not None and code != 0:
                self.failure = (rank, code)
                self._write_status(rank, code)
                host = host_names(self.hosts)[rank // self.per_host]
                self.stop(
                    f"rank {rank} ({host}) "
                    f"{ended(code)}: stopping the other ranks (SIGTERM now, SIGKILL in "
                    f"{self.grace:g} s)"
                )
                return

    def _write_status(self, rank: int, code: int) -> None:
        if not self.status:
            return
        node, local = divmod(rank, self.per_host)
        record = {
            "rank": rank,
            "host": host_names(self.hosts)[node],
            "local_rank": local,
            "exit_code": code,
            "signal": signal.Signals(-code).name if code < 0 else None,
        }
        partial = f"{self.status}.partial"
        with open(partial, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        os.replace(partial, self.status)

    def _exit_code(self) -> int:
        if self.failure is not None:
            code = self.failure[1]
        else:
            code = next((p.returncode for p in self.ranks if p.returncode != 0), 0)
        return code if code >= 0 else 128 - code


def ended(code: int) -> str:
    """How a rank ended, from its exit code (negative: the signal), as the reason says it."""
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="launcher", description=__doc__.splitlines()[0])
    parser.add_argument("--type", choices=TYPES, required=True)
    parser.add_argument("--hosts", type=int, required=True)
    parser.add_argument("--processes-per-host", type=int, required=True)
    parser.add_argument("--grace", type=float, required=True)
    parser.add_argument("--status")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    if args.hosts < 1 or args.processes_per_host < 1:
        parser.error("--hosts and --processes-per-host must be at least 1")
    group = Group(args.type, args.hosts, args.processes_per_host, args.grace, args.status)

    def on_signal(signum: int, frame: object) -> None:
        group.stop_requested = True  # acted on by the loop: no note written mid-line

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        group.start(args.command)
    except OSError as exc:
        note(f"cannot start {args.command[0]}: {exc}")
        group.stop()
        group.run()
        sys.exit(127)
    sys.exit(group.run())


if __name__ == "__main__":
    main()
