"""What every benchmark shares: processes, pinning, CPU time, percentiles, tables, the ratio line.

- **Processes**: :func:`start_server` starts ``rtecs-server`` (:func:`server_cmd`) or the bare
  relay floor (:func:`floor_cmd`, :mod:`bench._relay_floor`) pinned to a core *before exec*
  (``preexec_fn`` calls ``os.sched_setaffinity``, so the zmq I/O thread inherits the mask;
  checked in ``/proc/<pid>/task/*/status``), waits for its ``listening on ENDPOINT`` line and
  returns it; :func:`stop` ends it; :func:`stop_all` ends every one still running, and
  :func:`exit_on_sigterm` makes SIGTERM unwind through every ``finally``.
- **CPU**: :func:`cpu_seconds` (utime + stime of a process or thread, ``/proc/<pid>/stat``),
  :func:`zmq_io_cpu` (its ``ZMQbg/…`` threads), :func:`core_busy` / :func:`busy_pct` (each
  core's busy and softirq time from ``/proc/stat``), :func:`wait_quiet` (wait for idle cores
  on a shared machine), :func:`pin_self` (every thread of this process).
- **Figures**: :func:`percentile`, :class:`Table` (fixed-width columns), :func:`ratio_line`
  — the ``ratio to floor`` line every benchmark prints (``tests/test_bench_smoke.py`` looks
  for it).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The server (or floor) runs on SERVER_CORE, the load generator on GEN_CORE.
SERVER_CORE, GEN_CORE = 0, 1
#: How the rtecs server is started (a benchmark's ``--server-cmd`` may replace it).
SERVER_CMD = [sys.executable, "-m", "rtecs_server"]

# ----------------------------------------------------------------------------- CPU and cores

_CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str) -> float:
    """utime + stime of ``pid`` (all its threads; ``"self"``, or ``"PID/task/TID"`` for one
    thread), from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK


def zmq_io_cpu(pid: int | str) -> float:
    """CPU seconds of the zmq background threads (``ZMQbg/…``: I/O thread, reaper) of
    ``pid``; the rest of the process is the Python threads."""
    total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if not f.read().startswith("ZMQbg"):
                    continue
            total += cpu_seconds(f"{pid}/task/{tid}")
    return total


CoreTimes = dict[int, tuple[int, int, int]]


def core_busy() -> CoreTimes:
    """(busy, softirq + irq, total) jiffies per core from /proc/stat: everything that ran on
    it, kernel softirq work (loopback TCP) and other processes included."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                nums = [int(v) for v in vals[:8]]
                idle = nums[3] + nums[4]
                out[int(name[3:])] = (sum(nums) - idle, nums[5] + nums[6], sum(nums))
    return out


def busy_pct(before: CoreTimes, after: CoreTimes, core: int, column: int = 0) -> float:
    """% of ``core`` busy between two :func:`core_busy` readings (``column`` 1: softirq)."""
    total = after[core][2] - before[core][2]
    return 100 * (after[core][column] - before[core][column]) / total if total else math.nan


def wait_quiet(limit: float, busy: float = 10.0,
               cores: Sequence[int] = (SERVER_CORE, GEN_CORE)) -> tuple[float, ...]:
    """Wait (at most ``limit`` s) until ``cores`` are under ``busy`` % — this machine may be
    shared — and return how busy each was over the last 0.5 s (load that is not ours);
    ``limit`` 0 just measures 0.1 s."""
    deadline = time.monotonic() + limit
    while True:
        before = core_busy()
        time.sleep(0.5 if limit > 0 else 0.1)
        after = core_busy()
        out = tuple(busy_pct(before, after, c) for c in cores)
        if max(out) < busy or time.monotonic() >= deadline:
            return out


def pin_self(core: int) -> None:
    """Pin every thread of this process (``sched_setaffinity(0)`` pins only the caller);
    threads started later inherit the mask of the thread that starts them."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), {core})


def affinity(pid: int) -> set[str]:
    """The CPU lists of every thread of ``pid``."""
    out = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith("Cpus_allowed_list:"):
                    out.add(line.split(":", 1)[1].strip())
    return out


def need_cores(n: int = 2) -> None:
    if (os.cpu_count() or 1) < n:
        sys.exit(f"needs {n} cores")


# ----------------------------------------------------------------------------- processes

_LIVE: list[subprocess.Popen[str]] = []
_SERVER_FLAGS: dict[str, bool] = {}


def server_has_flag(flag: str) -> bool:
    """Whether this rtecs-server knows ``flag`` (from its ``--help``)."""
    if flag not in _SERVER_FLAGS:
        out = subprocess.run([*SERVER_CMD, "--help"], capture_output=True, text=True, cwd=ROOT,
                             timeout=30).stdout
        _SERVER_FLAGS[flag] = flag in out
    return _SERVER_FLAGS[flag]


def server_cmd(tick_ms: float | None = None, data_dir: str | None = None,
               extra: Sequence[str] = (), *, address_limits: bool = False) -> list[str]:
    """The rtecs server on a free loopback port (``tick_ms`` None: its default; ``data_dir``:
    a fresh one, so no room survives from an earlier run), with no limit on the sessions one
    address holds and no update budget shared by an address: every benchmark client comes
    from 127.0.0.1 (``extra`` may set them). ``address_limits``: keep the shared budget
    (:mod:`bench.abuse`, whose abuser connects from another address)."""
    cmd = [*SERVER_CMD, "--bind", "tcp://127.0.0.1:0", "--log-level", "warning"]
    if server_has_flag("--max-sessions-per-address"):
        cmd += ["--max-sessions-per-address", "0"]
    if not address_limits and server_has_flag("--address-budgets"):
        cmd += ["--address-budgets", "0"]
    if tick_ms is not None:
        cmd += ["--tick-ms", f"{tick_ms:g}"]
    if data_dir is not None and server_has_flag("--data-dir"):
        cmd += ["--data-dir", data_dir]
    return [*cmd, *extra]


def floor_cmd(tick_ms: float = 50.0) -> list[str]:
    """The bare relay (:mod:`bench._relay_floor`) batching every ``tick_ms`` (0: after every
    receive)."""
    return [sys.executable, "-m", "bench._relay_floor", "--tick-ms", f"{tick_ms:g}"]


def start_server(cmd: Sequence[str], core: int = SERVER_CORE, name: str = "server"
                 ) -> tuple[subprocess.Popen[str], str]:
    """Start ``cmd`` pinned to ``core`` from before exec and wait for its ``listening on
    ENDPOINT`` line; returns the process and the endpoint."""
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    _LIVE.append(proc)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline() if ready else ""
    match = re.search(r"listening on (\S+)", line)
    if not match:
        stop(proc)
        raise RuntimeError(f"{name} did not start: {line!r}")
    cpus = affinity(proc.pid)
    if cpus != {str(core)}:
        stop(proc)
        raise RuntimeError(f"{name} threads are not all pinned to core {core}: {cpus}")
    return proc, match.group(1)


def check_alive(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        raise RuntimeError(f"the server/relay exited with code {proc.returncode}")


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()
    with contextlib.suppress(ValueError):
        _LIVE.remove(proc)


def stop_all() -> None:
    for proc in list(_LIVE):
        stop(proc)


def exit_on_sigterm() -> None:
    """SIGTERM (and SIGINT, even when started in the background) unwind through every
    ``finally``: no server or relay is left behind."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# ----------------------------------------------------------------------------- figures

def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values`` by rank (nan when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Table:
    """Fixed-width columns: ``Table(("N", 5), ("server", -6), …)`` (a negative width
    left-aligns); :meth:`row` takes one cell per column, each a string or a number formatted
    with that column's format (default ``.1f``)."""

    def __init__(self, *columns: tuple[str, int] | tuple[str, int, str]) -> None:
        self.columns = [(c[0], c[1], c[2] if len(c) > 2 else ".1f")
                        for c in columns]

    @staticmethod
    def _cell(text: str, width: int) -> str:
        return f"{text:<{-width}}" if width < 0 else f"{text:>{width}}"

    def header(self) -> str:
        return " ".join(self._cell(title, width) for title, width, _ in self.columns)

    def row(self, *cells: object, note: str = "") -> str:
        out = []
        for (_, width, fmt), cell in zip(self.columns, cells, strict=True):
            text = cell if isinstance(cell, str) else format(cell, fmt)
            out.append(self._cell(text, width))
        return " ".join(out) + note


def ratio_line(what: str, ratio: float, target: float | None = None, detail: str = "") -> str:
    """``ratio to floor   2.57x  WHAT (DETAIL)  target ≤ T  OK|MISSED``: the line every
    benchmark prints for each ratio it measures against a floor of the same run."""
    text = f"ratio to floor {ratio:7.2f}x  {what}"
    if detail:
        text += f" ({detail})"
    if target is not None:
        ok = ratio <= target
        text += f"   target ≤ {target:g}x   {'OK' if ok else 'MISSED'}"
    return text


def say(text: str, width: int = 100) -> None:
    print(textwrap.fill(text, width, replace_whitespace=False))
