"""Optional py-spy profiles of the bench's workers: ``COSMIC_BENCH_PROFILE_DIR=DIR python -m bench``.

With the variable set, a section that drains a worker records it with ``py-spy record``
(collapsed stacks, 100 samples/s, ``--nonblocking``) into ``DIR/<name>.txt``: the pipeline
section from the worker's start until the drain is done (``pipeline-bridge-off``, ...), the
latency section while each rate runs (``latency-1000``, ...); ``python -m bench.profile DIR/<name>.txt`` prints where the
time went (inclusive share per function, and self time). Without the variable nothing runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

PROFILE_DIR_ENV = "COSMIC_BENCH_PROFILE_DIR"


def start_profiler(*, pid: int, name: str) -> subprocess.Popen | None:
    """Start ``py-spy record`` on ``pid`` if ``COSMIC_BENCH_PROFILE_DIR`` is set."""
    directory = os.environ.get(PROFILE_DIR_ENV)
    if not directory:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    Path(directory).mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "100", "--nonblocking", "--format", "raw",
                             "--output", str(Path(directory) / f"{name}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(process: subprocess.Popen | None) -> None:
    """Stop a profiler started by :func:`start_profiler` (it writes its file on SIGINT)."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def summarize(path: Path, *, top: int = 30) -> str:
    """Inclusive and self shares per function of a collapsed-stack file."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    if not total:
        return "no samples"
    rows = [f"{total:,} samples"]
    rows.append("inclusive:")
    rows += [f"  {100 * n / total:5.1f} %  {frame}" for frame, n in inclusive.most_common(top)]
    rows.append("self:")
    rows += [f"  {100 * n / total:5.1f} %  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(rows)


if __name__ == "__main__":
    print(summarize(Path(sys.argv[1])))
