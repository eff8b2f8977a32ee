"""The whole job against a plain sentence-transformers script doing the same read-encode-write.

    python bench/job_vs_st.py                 # 6,000 texts, MiniLM, CPU, 3 runs of each side
    python bench/job_vs_st.py --runs 1        # quicker, one run each
    python bench/job_vs_st.py --variant "--actors 1 --threads-per-actor 2"   # also time the job with these flags

Both sides are timed as a user experiences them: from starting the process to its exit,
on the same local Parquet shards, writing Parquet embeddings.  Ours is the CLI
(``python -m jobs.infer``: plan, start a local Ray, read → tokenize → model actor → write,
manifest); theirs is the script below (read with pyarrow, ``SentenceTransformer.encode``,
write with pyarrow), which gives the same embeddings (mean pooling, L2-normalised).
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
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

SENTENCE_TRANSFORMERS_SCRIPT = '''
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sentence_transformers import SentenceTransformer

model, source, target, device, batch_size = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
encoder = SentenceTransformer(model, device=device)
target.mkdir(parents=True, exist_ok=True)
for shard in sorted(source.glob("*.parquet")):
    texts = pq.read_table(shard, columns=["text"])["text"].to_pylist()
    vectors = encoder.encode(texts, batch_size=batch_size, convert_to_numpy=True)
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    pq.write_table(pa.table({"embedding": column}), target / shard.name)
'''


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    job_arguments(parser, texts=6000)
    parser.add_argument("--st-batch-size", type=int, default=32, help="sentence-transformers batch (default: 32, its own default)")
    parser.add_argument("--variant", action="append", default=[], metavar="FLAGS",
                        help="also run the job with these extra flags in every round (repeatable)")
    parser.add_argument("--output", type=Path, default=None, help="JSON results (default: bench/results/job_vs_st_<device>.json)")
    args = parser.parse_args(argv)
    model = str(model_path(MINILM))
    work = Path(tempfile.mkdtemp(prefix="autoinfer-job-vs-st-"))
    try:
        write_shards(generate_texts(args.texts), work / "input", args.shards)
        script = work / "st_encode.py"
        script.write_text(SENTENCE_TRANSFORMERS_SCRIPT)
        ours, theirs = [], []
        variants: dict[str, list[float]] = {flags: [] for flags in args.variant}
        for run in range(args.runs):  # alternate the sides, so a busy spell on the machine hits both
            ours.append(timed(job_command(model, work / "input", work / f"job-{run}", args.device)))
            theirs.append(timed([sys.executable, str(script), model, str(work / "input"), str(work / f"st-{run}"),
                                 args.device, str(args.st_batch_size)]))
            for number, (flags, seconds) in enumerate(variants.items()):
                seconds.append(timed(job_command(model, work / "input", work / f"job-{run}-variant-{number}", args.device)
                                     + shlex.split(flags)))
            extra = "".join(f", job {flags} {seconds[-1]:.1f} s" for flags, seconds in variants.items())
            print(f"  run {run + 1}: job {ours[-1]:.1f} s, sentence-transformers script {theirs[-1]:.1f} s{extra}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    job, st = statistics.median(ours), statistics.median(theirs)
    print(f"\n{args.texts} texts in {args.shards} Parquet shards, MiniLM, {args.device}, process start to exit "
          f"(median of {args.runs} runs)")
    print(f"{'side':<58} {'median s':>9} {'speed-up':>9}")
    print("-" * 78)
    print(f"{'sentence-transformers script (read, encode, write)':<58} {st:9.1f} {1.0:8.2f}x")
    print(f"{'our job (CLI, Ray start, Parquet in and out, manifest)':<58} {job:9.1f} {st / job:8.2f}x   target >= 1.2")
    for flags, seconds in variants.items():
        print(f"{'our job ' + flags:<58} {statistics.median(seconds):9.1f} {st / statistics.median(seconds):8.2f}x")
    write_json(args.output or RESULTS / f"job_vs_st_{args.device}.json",
               {"environment": environment(torch.device(args.device), torch.get_num_threads()), "texts": args.texts,
                "shards": args.shards, "job_seconds": ours, "sentence_transformers_seconds": theirs,
                "variant_seconds": variants,
                "speedup": st / job})
    return 0


if __name__ == "__main__":
    sys.exit(main())
