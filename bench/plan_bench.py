"""Planning huge inputs: time and peak driver memory of ``jobs.plan.plan`` over N tiny files.

    python bench/plan_bench.py --files 1000 10000 100000 [--output bench/results/plan_cpu.json]

Each size is planned in a fresh process (so peak memory is that run's alone) over tiny
Parquet files generated here (one small file's bytes written N times, 1,000 per directory).
Reported per size: listing + footers time, the plan's units, the driver's peak RSS above
what it held before planning (sampled, so Arrow's native buffers count too).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
PER_DIRECTORY = 1000


def generate(root: Path, files: int) -> None:
    """``files`` copies of one 8-row Parquet file under ``root``/dNNN/ (fast: no encoding per file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"text": [f"row {i} about rivers" for i in range(8)]}), sink)
    data = sink.getvalue()
    for index in range(files):
        directory = root / f"d{index // PER_DIRECTORY:04d}"
        if index % PER_DIRECTORY == 0:
            directory.mkdir(parents=True, exist_ok=True)
        (directory / f"part-{index:06d}.parquet").write_bytes(data)


def _rss() -> int:
    """This process's resident memory now (bytes)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(root: str) -> dict:
    """Plan ``root`` in this process; time and peak memory (run in a child by ``main``).

    The peak is sampled every 5 ms while planning (``ru_maxrss`` would report the imports'
    peak), so it includes Arrow's native buffers, not only Python objects."""
    import threading

    sys.path.insert(0, str(REPO))
    from jobs.plan import plan

    baseline = _rss()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    work = plan([root], ["text"], 50_000, {}, text_columns=["text"])
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _rss())
    return {"files": len(work.shards), "units": len(work.units), "rows": work.num_rows, "seconds": seconds,
            "files_per_second": len(work.shards) / seconds, "baseline_rss_mib": baseline / 2**20,
            "peak_rss_above_baseline_mib": (peak[0] - baseline) / 2**20}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: plan this directory, print JSON
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    results = []
    for files in args.files:
        with tempfile.TemporaryDirectory(prefix="plan-bench-") as root:
            started = time.perf_counter()
            generate(Path(root), files)
            generated = time.perf_counter() - started
            child = subprocess.run([sys.executable, __file__, "--measure", root], capture_output=True, text=True,
                                   check=True)
            result = {**json.loads(child.stdout.strip().splitlines()[-1]), "generate_seconds": generated}
        results.append(result)
        print(f"{result['files']:>7,} files: plan {result['seconds']:6.2f} s ({result['files_per_second']:,.0f} files/s), "
              f"peak driver RSS +{result['peak_rss_above_baseline_mib']:.0f} MiB above {result['baseline_rss_mib']:.0f} MiB "
              f"(generated in {generated:.1f} s)", flush=True)
    if args.output:
        args.output.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                                           "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
