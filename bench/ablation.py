"""What pays in the model stage: each knob switched alone against the stage's defaults.

    python bench/ablation.py                      # MiniLM, CPU, float32, all knobs (~3 min on 2 cores)
    python bench/ablation.py --knobs budget,rows --texts 400

Every variant runs the model stage (``actors.embed.Embed``) on the same pre-tokenized Arrow
table.  Rounds interleave the variants (a slow spell on a shared machine hits them all) and
each variant's time is the median over rounds.  Tokens per CPU-second (from the round that
used the least CPU time) are shown too: they move much less than wall time when other
processes compete for the cores, above all with ``--threads 1`` (no thread waits on another).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MINILM, RESULTS, environment, generate_texts, model_path, resolve_device, resolve_dtype, synchronize, write_json  # noqa: E402

from actors.common import TOKENS  # noqa: E402
from actors.embed import Embed  # noqa: E402
from actors.tokenize import Tokenize  # noqa: E402
from autoload.modeling import FusedQKV  # noqa: E402

KNOBS = ("unpadded", "fused_qkv", "budget", "rows", "grad_mode", "threads")


@dataclass
class Variant:
    knob: str
    name: str
    setup: Callable[[Embed], contextlib.AbstractContextManager]


def _settings(**values: object) -> Callable[[Embed], contextlib.AbstractContextManager]:
    """A variant that sets stage attributes for its run and puts them back afterwards."""
    @contextlib.contextmanager
    def apply(stage: Embed) -> Iterator[None]:
        saved = {k: getattr(stage, k) for k in values}
        for k, v in values.items():
            setattr(stage, k, v)
        try:
            yield
        finally:
            for k, v in saved.items():
                setattr(stage, k, v)
    return apply


@contextlib.contextmanager
def _unfused(stage: Embed) -> Iterator[None]:
    """Three q/k/v GEMMs per layer instead of one (drop the fused copies, rebuild after)."""
    modules = [m for m in stage.model.modules() if isinstance(m, FusedQKV)]
    for module in modules:
        del module.qkv_weight, module.qkv_bias
    try:
        yield
    finally:
        for module in modules:
            module.fuse_qkv()


@contextlib.contextmanager
def _no_grad_instead_of_inference_mode(stage: Embed) -> Iterator[None]:
    """The stage wraps its forwards in torch.inference_mode; swap in torch.no_grad."""
    import actors.model_stage as model_stage

    class _Torch:
        def __getattr__(self, name: str) -> object:
            return torch.no_grad if name == "inference_mode" else getattr(torch, name)

    model_stage.torch = _Torch()
    try:
        yield
    finally:
        model_stage.torch = torch


def _threads(count: int) -> Callable[[Embed], contextlib.AbstractContextManager]:
    @contextlib.contextmanager
    def apply(stage: Embed) -> Iterator[None]:
        saved = torch.get_num_threads()
        torch.set_num_threads(count)
        try:
            yield
        finally:
            torch.set_num_threads(saved)
    return apply


def variants(knobs: list[str], budget: int, rows: int, threads: int) -> list[Variant]:
    found = [Variant("default", f"default (unpadded, fused QKV, {budget} tokens, {rows} rows)", _settings())]
    if "unpadded" in knobs:
        found.append(Variant("unpadded", "padded forwards (sorted micro-batches)", _settings(flat=False)))
    if "fused_qkv" in knobs:
        found.append(Variant("fused_qkv", "three q/k/v GEMMs", _unfused))
    if "budget" in knobs:
        found += [Variant("budget", f"token budget {b}", _settings(max_batch_tokens=b))
                  for b in (512, 1024, 2048, 4096, 8192, 16384, 32768) if b != budget]
    if "rows" in knobs:
        found += [Variant("rows", f"at most {r} rows (budget 65536)", _settings(batch_size=r, max_batch_tokens=65536))
                  for r in (8, 16, 32, 64, 128)]
    if "grad_mode" in knobs:
        found.append(Variant("grad_mode", "torch.no_grad instead of inference_mode", _no_grad_instead_of_inference_mode))
    if "threads" in knobs:
        found += [Variant("threads", f"{n} torch thread(s)", _threads(n)) for n in range(1, threads)]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MINILM, help="minilm, bert-base or bert-large (default: minilm)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--dtype", default="auto", help="float32, float16, bfloat16 or auto (float16 on GPU, else float32)")
    parser.add_argument("--texts", type=int, default=400, help="generated texts (default: 400)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians over them (default: 3)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: all)")
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="the default variant's budget (default: the stage's)")
    parser.add_argument("--batch-size", type=int, default=None, help="the default variant's row cap (default: the stage's)")
    parser.add_argument("--knobs", default=",".join(KNOBS), help=f"comma-separated subset of {','.join(KNOBS)}")
    parser.add_argument("--output", type=Path, default=None, help="JSON results (default: bench/results/ablation_<device>.json)")
    args = parser.parse_args(argv)
    knobs = [k for k in args.knobs.split(",") if k]
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        parser.error(f"unknown knobs {unknown}; choose from {KNOBS}")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    path = str(model_path(args.model))
    texts = generate_texts(args.texts)
    max_length = 256 if args.model == MINILM else 512
    table = Tokenize(path, text_column="text", max_length=max_length, drop_columns=["text"])(pa.table({"text": texts}))
    tokens = int(table[TOKENS].to_numpy().sum())
    options = {k: v for k, v in (("max_batch_tokens", args.max_batch_tokens), ("batch_size", args.batch_size)) if v}
    stage = Embed(path, device=str(device), dtype=dtype, threads=args.threads, **options)
    print(f"{args.model} on {device} ({dtype}, {args.threads} threads): {len(texts)} texts, {tokens:,} tokens; "
          f"{args.rounds} interleaved rounds", flush=True)
    chosen = variants(knobs, stage.max_batch_tokens, stage.batch_size, args.threads)
    walls: dict[str, list[float]] = {v.name: [] for v in chosen}
    cpus: dict[str, list[float]] = {v.name: [] for v in chosen}
    for variant in chosen:  # warm-up: allocator pools, oneDNN kernels for each shape family
        with variant.setup(stage):
            stage(table.slice(0, min(64, table.num_rows)))
    for round_index in range(args.rounds):
        for variant in chosen:
            with variant.setup(stage):
                synchronize(device)
                wall, cpu = time.perf_counter(), time.process_time()
                stage(table)
                synchronize(device)
                walls[variant.name].append(time.perf_counter() - wall)
                cpus[variant.name].append(time.process_time() - cpu)
        print(f"  round {round_index + 1}/{args.rounds} done", flush=True)
    default = statistics.median(walls[chosen[0].name])
    print(f"\n{'knob':<10} {'variant':<52} {'median s':>9} {'tok/s':>9} {'tok/CPU-s':>10} {'default/this':>13}")
    print("-" * 108)
    rows = []
    for variant in chosen:
        wall = statistics.median(walls[variant.name])
        cpu = min(cpus[variant.name])
        rows.append({"knob": variant.knob, "variant": variant.name, "wall_seconds": walls[variant.name],
                     "cpu_seconds": cpus[variant.name], "tokens_per_second": tokens / wall,
                     "tokens_per_cpu_second": tokens / cpu, "speed_vs_default": default / wall})
        print(f"{variant.knob:<10} {variant.name:<52} {wall:9.2f} {tokens / wall:9,.0f} {tokens / cpu:10,.0f} "
              f"{default / wall:12.2f}x")
    write_json(args.output or RESULTS / f"ablation_{device.type}.json",
               {"environment": environment(device, args.threads), "model": args.model, "dtype": dtype,
                "texts": len(texts), "tokens": tokens, "variants": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
