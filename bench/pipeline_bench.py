"""Pipeline overhead: the full Ray Data job against the same stages in a plain loop.

    python bench/pipeline_bench.py                      # MiniLM, 2,000 texts in 4 shards, CPU
    python bench/pipeline_bench.py --texts 20000 --shards 8 --device cuda

Both sides do the same work on the same local Parquet shards: read, tokenize (the tokenize
stage), embed (the model stage: sorted token-budget micro-batches, unpadded forward), write
one Parquet file per shard.  The job runs as a user runs it (``python -m jobs.infer``, a local
Ray started by the job); the loop builds the stage classes (loading the model) and calls
them one shard after another, in as many processes as the job has model actors with as many
threads each (on CPU: one single-threaded process per CPU, the shards dealt round-robin; on
GPU: one process).  The overhead ratio is the job's pipeline time
(from its manifest: Ray start-up and planning excluded; actor start-up and model loading
included) over the loop's time; the job's end-to-end time is shown too.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    MINILM,
    RESULTS,
    environment,
    generate_texts,
    job_arguments,
    job_command,
    model_path,
    write_json,
    write_shards,
)

from actors.embed import Embed  # noqa: E402
from actors.tokenize import Tokenize  # noqa: E402


def _loop(shards: list[Path], output: Path, model: str, device: str, threads: int) -> None:
    """Build the stages (the job's actors load the model inside its pipeline time too), then
    read → tokenize → embed → write, shard by shard, in this process."""
    torch.set_num_threads(threads)
    tokenize = Tokenize(model, text_column="text", max_length=256, drop_columns=["text"])
    # The job's defaults for this model: mean pooling and L2 normalisation (its sentence-transformers files).
    embed = Embed(model, pooling="mean", normalize=True, device=device, threads=threads)
    output.mkdir(parents=True, exist_ok=True)
    for shard in shards:
        table = embed(tokenize(pq.read_table(shard, columns=["text"])))
        pq.write_table(pa.table({"embedding": table["embedding"]}), output / shard.name)


def plain_loop(shards: list[Path], output: Path, model: str, device: str, threads: int, processes: int) -> float:
    """The stages in a plain loop: in this process, or split over ``processes`` fresh
    processes (the shards dealt round-robin), as the job splits them over its actors."""
    started = time.perf_counter()
    if processes == 1:
        _loop(shards, output, model, device, threads)
    else:
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_loop, [shards[k::processes] for k in range(processes)], [output] * processes,
                          [model] * processes, [device] * processes, [threads] * processes))
    return time.perf_counter() - started


def job(shards_dir: Path, output: Path, model: str, device: str) -> dict:
    """``python -m jobs.infer`` on the shards; returns its manifest's summary plus the wall time."""
    command = job_command(model, shards_dir, output, device)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the job failed ({done.returncode}):\n{done.stderr[-4000:]}")
    summary = json.loads((output / "_manifest.json").read_text())["summary"]
    return {"wall": wall, "pipeline": summary["seconds"]["pipeline"], "ray_startup": summary["seconds"]["ray_startup"],
            "total": summary["seconds"]["total"], "stages_busy": summary["seconds"]["stages_busy"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    job_arguments(parser, texts=2000)
    parser.add_argument("--processes", type=int, default=None,
                        help="plain-loop processes (default: as many as the job's actors: 1 with --device cuda, else one per CPU)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per plain-loop process (default: as the job's actors: 1 on CPU)")
    parser.add_argument("--output", type=Path, default=None, help="JSON results (default: bench/results/pipeline_<device>.json)")
    args = parser.parse_args(argv)
    cpus = os.cpu_count() or 1
    args.processes = args.processes or (1 if args.device == "cuda" else cpus)
    args.threads = args.threads or (cpus if args.device == "cuda" else 1)
    model = str(model_path(MINILM))
    work = Path(tempfile.mkdtemp(prefix="autoinfer-pipeline-bench-"))
    try:
        shards = write_shards(generate_texts(args.texts), work / "input", args.shards)
        loops, jobs = [], []
        for run in range(args.runs):  # alternate the sides, so a busy spell on the machine hits both
            loops.append(plain_loop(shards, work / f"loop-{run}", model, args.device, args.threads, args.processes))
            jobs.append(job(work / "input", work / f"job-{run}", model, args.device))
            print(f"  run {run + 1}: plain loop {loops[-1]:.1f} s; job pipeline {jobs[-1]['pipeline']:.1f} s "
                  f"(Ray start {jobs[-1]['ray_startup']:.1f} s, end to end {jobs[-1]['wall']:.1f} s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    loop = statistics.median(loops)
    pipeline = statistics.median(j["pipeline"] for j in jobs)
    wall = statistics.median(j["wall"] for j in jobs)
    print(f"\n{args.texts} texts in {args.shards} shards, MiniLM, {args.device} (median of {args.runs} runs)")
    print(f"{'side':<52} {'median s':>9} {'vs plain loop':>14}")
    print("-" * 77)
    print(f"{f'plain loop, {args.processes} process(es) x {args.threads} thread(s)':<52} {loop:9.1f} {1.0:13.2f}x")
    print(f"{'Ray Data job, pipeline (manifest)':<52} {pipeline:9.1f} {pipeline / loop:13.2f}x   target <= 1.15")
    print(f"{'Ray Data job, end to end (process start to exit)':<52} {wall:9.1f} {wall / loop:13.2f}x")
    write_json(args.output or RESULTS / f"pipeline_{args.device}.json",
               {"environment": environment(torch.device(args.device), args.threads), "texts": args.texts,
                "loop_processes": args.processes,
                "shards": args.shards, "plain_loop_seconds": loops, "jobs": jobs,
                "overhead_ratio": pipeline / loop, "end_to_end_ratio": wall / loop})
    return 0


if __name__ == "__main__":
    sys.exit(main())
