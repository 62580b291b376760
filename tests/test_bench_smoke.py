"""Every benchmark runs (about a second of it, ``--quick``) and prints its ratio to a floor.

Not a timing test: the figures of a quick run mean nothing; this only keeps the benchmarks
from rotting as the library and its wire protocol change.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ["room_fanout", "server_tick", "wire_layout", "client_tick", "storage",
              "sync_system", "abuse"]
RATIO = re.compile(r"^ratio to floor +(\d+\.\d+|nan)x ", re.MULTILINE)
#: The network benchmarks pin a server to core 0 and their generator to core 1.
TWO_CORES = {"room_fanout", "server_tick", "wire_layout", "abuse"}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_quick(name: str) -> None:
    if name in TWO_CORES and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 cores")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "server")])}
    proc = subprocess.run([sys.executable, "-m", f"bench.{name}", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=18)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    ratios = RATIO.findall(proc.stdout)
    assert ratios, f"no 'ratio to floor' line:\n{out[-3000:]}"
    # nan: a floor that read 0 CPU jiffies in its short window; the run itself worked
    assert any(r != "nan" for r in ratios), out[-3000:]
