"""Model-level benchmark: our model stage against transformers and sentence-transformers.

    python bench/model_bench.py                                  # MiniLM, CPU, float32 (~3 min on 2 cores)
    python bench/model_bench.py --models minilm,bert-base,bert-large --device cuda --dtype float16

Contenders, on the same generated texts (lognormal word counts, 5-300 words), device and dtype:

- ours: the model stage (``actors.embed.Embed``) called on pre-tokenized Arrow batches as the
  tokenize stage delivers them, returning Arrow embeddings (sorted token-budget micro-batches,
  unpadded forward); "ours + tokenize" adds the tokenize stage, to compare with
  sentence-transformers, which tokenizes inside ``encode``;
- transformers, padded, in input order (how most users call it): bs 128 on GPU, 32 on CPU;
- transformers, length-sorted, at each of a few batch sizes (the best one is its "best");
- sentence-transformers ``encode`` (sorts by length itself; includes tokenizing).

transformers' inputs are tokenized before the clock starts and its mean pooling (as
sentence-transformers') is timed with the forward.  tok/s counts real (non-pad) tokens.
Results go to a JSON file that ``bench/plot.py`` draws.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    MINILM,
    MODELS,
    RESULTS,
    Timing,
    environment,
    generate_texts,
    measure,
    model_path,
    resolve_device,
    resolve_dtype,
    table,
    write_json,
)

from actors.common import TOKENS  # noqa: E402
from actors.embed import Embed  # noqa: E402
from actors.tokenize import Tokenize  # noqa: E402

OURS = "ours (model stage, Arrow in/out)"
INPUT_ORDER = "transformers padded, input order, bs {}"
SORTED = "transformers length-sorted, bs {}"
SENTENCE_TRANSFORMERS = "sentence-transformers encode, bs {}"
# Rows of the untimed warm-up call before each contender's timed runs.
WARMUP_ROWS = 64


def max_length(model: str) -> int:
    return 256 if model == MINILM else 512  # MiniLM's sentence-transformers limit; BERT's position table


def bench_model(model: str, texts: list[str], device: torch.device, dtype: str, args: argparse.Namespace) -> list[Timing]:
    path = str(model_path(model))
    limit = max_length(model)
    tokenize = Tokenize(path, text_column="text", max_length=limit, drop_columns=["text"])
    raw = pa.table({"text": texts})
    tokenized = tokenize(raw)
    lengths = tokenized[TOKENS].to_numpy()
    tokens, rows = int(lengths.sum()), len(texts)
    print(f"\n{model}: {rows} texts, {tokens:,} tokens (mean {lengths.mean():.0f}, max {lengths.max()}), "
          f"{device}, {dtype}", flush=True)
    timings: list[Timing] = []
    kwargs = {k: v for k, v in (("max_batch_tokens", args.max_batch_tokens), ("batch_size", args.max_rows)) if v}
    stage = Embed(path, pooling="mean", device=str(device), dtype=dtype, threads=args.threads, **kwargs)
    budget = f"budget {stage.max_batch_tokens} tokens, <= {stage.batch_size} rows"
    warm = tokenized.slice(0, WARMUP_ROWS)
    timings.append(measure(OURS, lambda: stage(tokenized), runs=args.runs, tokens=tokens, rows=rows, device=device,
                           warmup=lambda: stage(warm), note=budget))
    timings.append(measure("ours + tokenize stage", lambda: stage(tokenize(raw)), runs=args.runs, tokens=tokens,
                           rows=rows, device=device, warmup=lambda: stage(tokenize(raw.slice(0, WARMUP_ROWS))),
                           note="text in, like sentence-transformers"))
    del stage

    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        print("  transformers is not installed: its contenders are left out", flush=True)
        return timings
    reference = AutoModel.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    order = np.arange(rows)
    by_length = np.argsort(-lengths, kind="stable")
    timings.append(_transformers(INPUT_ORDER.format(args.batch_size), reference, tokenizer, texts, order,
                                 args.batch_size, limit, device, args, tokens))
    for size in args.sorted_batch_sizes:
        timings.append(_transformers(SORTED.format(size), reference, tokenizer, texts, by_length, size, limit,
                                     device, args, tokens))
    del reference

    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        print("  sentence-transformers is not installed: its contender is left out", flush=True)
        return timings
    st = SentenceTransformer(path, device=str(device))
    st.max_seq_length = limit
    st.to(getattr(torch, dtype))
    timings.append(measure(SENTENCE_TRANSFORMERS.format(args.st_batch_size),
                           lambda: st.encode(texts, batch_size=args.st_batch_size, convert_to_numpy=True),
                           runs=args.runs, tokens=tokens, rows=rows, device=device, note="includes tokenizing",
                           warmup=lambda: st.encode(texts[:WARMUP_ROWS], batch_size=args.st_batch_size)))
    return timings


def _transformers(name: str, model, tokenizer, texts: list[str], order: np.ndarray, batch_size: int, limit: int,
                  device: torch.device, args: argparse.Namespace, tokens: int) -> Timing:
    """Forward + mean pooling over pre-tokenized batches in ``order``; results back in input order."""
    batches = [(order[s:s + batch_size],
                tokenizer([texts[i] for i in order[s:s + batch_size]], padding=True, truncation=True,
                          max_length=limit, return_tensors="pt"))
               for s in range(0, len(order), batch_size)]
    width = model.config.hidden_size

    def run(limit: int = len(batches)) -> np.ndarray:
        out = np.zeros((len(texts), width), dtype=np.float32)
        with torch.inference_mode():
            for rows, batch in batches[:limit]:
                batch = {k: v.to(device) for k, v in batch.items()}
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"][..., None].to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[rows] = pooled.float().cpu().numpy()
        return out

    padded = sum(int(b["input_ids"].numel()) for _, b in batches)
    return measure(name, run, runs=args.runs, tokens=tokens, rows=len(texts), device=device,
                   warmup=lambda: run(max(1, WARMUP_ROWS // batch_size)), note=f"{100 * (1 - tokens / padded):.0f}% padding")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=MINILM, help=f"comma-separated, from {','.join(MODELS)} (default: minilm)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when available)")
    parser.add_argument("--dtype", default="auto", help="float32, float16, bfloat16 or auto (float16 on GPU, else float32)")
    parser.add_argument("--texts", type=int, default=None, help="generated texts (default: 300 on CPU, 20000 on GPU)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per contender, after a warm-up (default: 3)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: all cores)")
    parser.add_argument("--batch-size", type=int, default=None, help="transformers input-order batch (default: 128 GPU, 32 CPU)")
    parser.add_argument("--sorted-batch-sizes", default=None,
                        help="transformers length-sorted batches to try (default: 256,512 GPU; 16,32,64 CPU)")
    parser.add_argument("--st-batch-size", type=int, default=None, help="sentence-transformers batch (default: as --batch-size)")
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="our token budget (default: the stage's for the device)")
    parser.add_argument("--max-rows", type=int, default=None, help="our rows per forward (default: the stage's)")
    parser.add_argument("--output", type=Path, default=None, help="JSON results (default: bench/results/model_<device>.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    gpu = device.type == "cuda"
    args.batch_size = args.batch_size or (128 if gpu else 32)
    args.st_batch_size = args.st_batch_size or args.batch_size
    args.sorted_batch_sizes = [int(s) for s in (args.sorted_batch_sizes or ("256,512" if gpu else "16,32,64")).split(",")]
    texts = generate_texts(args.texts or (20000 if gpu else 300))
    models = [m for m in args.models.split(",") if m]
    results = {"environment": environment(device, args.threads), "dtype": dtype, "texts": len(texts), "models": {}}
    reports = []
    for model in models:
        timings = bench_model(model, texts, device, dtype, args)
        ours = next(t for t in timings if t.name == OURS)
        input_order = next((t for t in timings if t.name == INPUT_ORDER.format(args.batch_size)), None)
        sorted_best = min((t for t in timings if t.name.startswith("transformers length-sorted")), key=lambda t: t.median,
                          default=None)
        results["models"][model] = {"timings": [t.to_dict() for t in timings],
                                    "sorted_best": sorted_best.name if sorted_best else None,
                                    "input_order": input_order.name if input_order else None, "ours": OURS}
        baseline = input_order or ours
        report = table(f"\n{model} on {device}, {dtype}, {args.threads} threads, {len(texts)} texts "
                       f"(median of {args.runs} runs; ratio = {baseline.name} time / this time)", timings, baseline.name)
        if input_order and sorted_best:
            report += (f"\nours vs transformers input order: {input_order.median / ours.median:.2f}x; "
                       f"vs its length-sorted best ({sorted_best.name}): {sorted_best.median / ours.median:.2f}x")
        reports.append(report)
        print(report, flush=True)
    if len(reports) > 1:
        print("\n".join(["", "=" * 99, *reports]))
    write_json(args.output or RESULTS / f"model_{device.type}.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
