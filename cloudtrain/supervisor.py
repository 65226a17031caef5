"""A tiny supervisor between the orchestrator and what it starts: nothing outlives either.

Run by path (``python cloudtrain/supervisor.py``), so it imports only the standard library
and psutil and starts in a few tens of milliseconds. Two modes:

``run --log FILE --grace S --drain-fd N -- COMMAND...``
    One training attempt. The supervisor becomes a child subreaper (Linux), so whatever
    the script spawns, even a daemon in a new session, stays its descendant and is found.
    The attempt ends with the whole tree: when the script exits, what it left running is
    stopped; SIGTERM to the supervisor stops the tree (SIGTERM, then SIGKILL after the
    grace period), which is how ``max_run`` and reclaims hold whatever the script spawned.
``guard --grace S PID...``
    Processes the orchestrator did not start itself (Prefect's embedded server).

Both watch their stdin, a pipe whose only writer is the orchestrator: end of file means
the orchestrator is gone, however it died (kill -9 included). That is portable and tied to
the process, unlike PR_SET_PDEATHSIG, which fires when the *thread* that forked exits and
leaves nobody to say why. Then the tree is stopped the same way, and in ``run`` mode the
reason and the rest of the script's output go to the attempt's log (``--drain-fd`` is a
copy of the read end of the output pipe, so the script never writes into a broken pipe).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import select
import signal
import subprocess
import sys
import time

import psutil

PR_SET_CHILD_SUBREAPER = 36
TICK_SECONDS = 0.1  # how often deadlines and orphans are checked between events
NOTE = "[cloudtrain] "
#: As ``cloudtrain.secrets`` masks (this module imports nothing of cloudtrain; a test
#: holds the two equal).
MASK = b"**********"
MIN_MASKED_BYTES = 4


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to us instead of init (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def descendants() -> list[psutil.Process]:
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def signal_all(processes: list[psutil.Process], sig: int) -> None:
    for process in processes:
        try:
            process.send_signal(sig)
        except psutil.Error:
            pass


def reap() -> list[tuple[int, int]]:
    """Collect every child that ended (adopted orphans included): (pid, exit code)."""
    ended: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended.append((pid, os.waitstatus_to_exitcode(status)))


class Supervisor:
    def __init__(
        self, grace: float, log: str | None, drain_fd: int | None, masks: list[bytes] | None = None
    ) -> None:
        self.grace = grace
        self.log = log
        self.drain_fd = drain_fd
        # Secret values the orchestrator masks; once it is gone, the log is written here.
        self.masks = sorted(masks or [], key=len, reverse=True)
        self.orphaned = False  # the orchestrator is gone
        self.orchestrator = os.getppid()  # read now: once it is gone, getppid() names a reaper
        self.stop_at: float | None = None  # when SIGKILL follows SIGTERM
        self.killed = False
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.stop()

    def note(self, text: str) -> None:
        """A line of the attempt's output; into the log file once nobody reads the pipe."""
        line = (NOTE + text + "\n").encode()
        try:
            if self.orphaned:
                if self.log:
                    with open(self.log, "ab") as handle:
                        handle.write(line)
            else:
                os.write(1, line)
        except OSError:
            pass

    def stop(self) -> None:
        """SIGTERM to every descendant now, SIGKILL after the grace period."""
        if self.stop_at is None:
            self.stop_at = time.monotonic() + self.grace
        signal_all(descendants(), signal.SIGTERM)

    def wait(self, main_pid: int | None) -> int:
        """Until the main process and every descendant are gone; the main one's exit code."""
        code = 0
        main_done = main_pid is None
        watching = True
        while True:
            for pid, status in reap():
                if pid == main_pid:
                    code, main_done = status, True
            left = descendants()
            if main_done and not left:
                return code
            if main_done and left and self.stop_at is None and not self.orphaned:
                names = ", ".join(f"{p.pid}" for p in left[:5])
                self.note(f"the script exited; stopping what it left running (pid {names})")
                self.stop()
            if self.stop_at is not None and not self.killed and time.monotonic() >= self.stop_at:
                self.killed = True
                signal_all(left, signal.SIGKILL)
            if self.killed and left:
                signal_all(left, signal.SIGKILL)  # what was forked since
            ready = self._select(watching)
            if 0 in ready and not os.read(0, 4096):
                watching = False
                self._orchestrator_gone()
            if self.wake_r in ready:
                os.read(self.wake_r, 4096)
            if self.drain_fd in ready:
                self._drain()

    def _select(self, watching: bool) -> list[int]:
        fds = [self.wake_r] + ([0] if watching else [])
        if self.orphaned and self.drain_fd is not None:
            fds.append(self.drain_fd)
        try:
            ready, _, _ = select.select(fds, [], [], TICK_SECONDS)
        except InterruptedError:
            return []
        return list(ready)

    def _orchestrator_gone(self) -> None:
        self.orphaned = True
        if self.drain_fd is not None:
            os.set_blocking(self.drain_fd, False)
            self._drain()
        self.note(
            f"the orchestrator (pid {self.orchestrator}) is gone: "
            f"stopping the script and everything it started (SIGTERM now, SIGKILL in "
            f"{self.grace:g} s)"
        )
        self.stop()

    def _drain(self) -> None:
        """What the script writes once the orchestrator is gone goes to the log file."""
        assert self.drain_fd is not None
        try:
            data = os.read(self.drain_fd, 1 << 16)
        except BlockingIOError:
            return
        if data:
            self._append(data)

    def _append(self, data: bytes) -> None:
        if not self.log:
            return
        for value in self.masks:
            data = data.replace(value, MASK)
        with open(self.log, "ab") as handle:
            handle.write(data)

    def finish_drain(self) -> None:
        if self.drain_fd is None or not self.orphaned:
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # our own copies of the pipe's write end, so it reaches EOF
        os.dup2(devnull, 2)
        os.set_blocking(self.drain_fd, True)
        while data := os.read(self.drain_fd, 1 << 16):
            self._append(data)


def exit_like(code: int) -> None:
    """Exit as the script did: a script killed by a signal is reported as killed by it."""
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        os.kill(os.getpid(), -code)
        time.sleep(1)
    sys.exit(code if code >= 0 else 128 - code)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="supervisor", description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    run = modes.add_parser("run")
    run.add_argument("--grace", type=float, required=True)
    run.add_argument("--log")
    run.add_argument("--drain-fd", type=int)
    run.add_argument("--mask-env", action="append", default=[], help="mask this variable's value")
    run.add_argument("command", nargs="+")
    guard = modes.add_parser("guard")
    guard.add_argument("--grace", type=float, required=True)
    guard.add_argument("pids", type=int, nargs="+")
    args = parser.parse_args(argv)

    if args.mode == "guard":
        guard_processes(args.pids, args.grace)
        return
    become_subreaper()
    masks = [os.environ.get(name, "").encode() for name in args.mask_env]
    masks = [value for value in masks if len(value) >= MIN_MASKED_BYTES]
    supervisor = Supervisor(args.grace, args.log, args.drain_fd, masks)
    try:
        script = subprocess.Popen(args.command, stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        supervisor.note(f"cannot start {args.command[0]}: {exc}")
        sys.exit(127)
    code = supervisor.wait(script.pid)
    script.returncode = code  # reaped above; keeps Popen from waiting again
    supervisor.finish_drain()
    exit_like(code)


def guard_processes(pids: list[int], grace: float) -> None:
    """Until the orchestrator is gone; then stop the given processes and their trees."""
    processes = []
    for pid in pids:
        try:
            processes.append(psutil.Process(pid))  # remembers its start time: no pid reuse
        except psutil.Error:
            pass
    while os.read(0, 4096):
        pass
    tree = list(processes)
    for process in processes:
        try:
            tree += process.children(recursive=True)
        except psutil.Error:
            pass
    signal_all([p for p in tree if p.is_running()], signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=grace)
    signal_all(alive, signal.SIGKILL)


_guards: list[subprocess.Popen[bytes]] = []  # their stdin stays open as long as we live


def start_guard(pids: list[int], grace: float = 5.0) -> None:
    """Stop ``pids`` (and their trees) once this process is gone, however it ends."""
    _guards.append(
        subprocess.Popen(
            [sys.executable, "-P", __file__, "guard", "--grace", str(grace), *map(str, pids)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C and the terminal's hang-up reach us, not it
        )
    )


if __name__ == "__main__":
    main()
