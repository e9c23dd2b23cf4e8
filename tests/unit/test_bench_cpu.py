"""bench/cpu.py reads CPU seconds from /proc: checked against the process's own clock (os.times)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.cpu import CpuMeter, children, cpu_seconds


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_the_meter_counts_what_the_process_spent() -> None:
    meter = CpuMeter({"self": [os.getpid()]})
    before = os.times()
    meter.start()
    _burn(0.3)
    spent = meter.stop()["self"]
    after = os.times()
    expected = (after.user - before.user) + (after.system - before.system)
    assert abs(spent - expected) <= 0.05  # /proc counts in clock ticks (10 ms)


def test_children_and_a_finished_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in children(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert cpu_seconds(child.pid) == 0.0
    assert child.pid not in children(os.getpid())
