"""Causal-LM stages against the reference's own loops, on the same texts, device and dtype.

    python bench/causal_bench.py                           # GPT-2-small shape, CPU, 120 texts
    python bench/causal_bench.py --device cuda --texts 2000 --shape gpt2-medium

Random-weight GPT-2 shapes (no hub here: speed depends on the shape only), saved once under
the bench cache with a byte-level BPE trained on the bench's word list.  Contenders:

- score: our Score stage (sorted token-budget micro-batches, unpadded causal forward, the LM
  head a chunk of tokens at a time) vs transformers' GPT2LMHeadModel in batches of the input
  order, padded, log-softmax of the logits gathered at the next tokens (the usual loop);
- generate (greedy, --new-tokens per prompt): our Generate stage (left-padded prefill, KV
  cache, finished rows leave the batch) vs transformers' ``generate`` in batches of the input
  order, left-padded.

tok/s counts the scored tokens for score and the generated tokens for generate; medians of
``--runs`` runs after a warm-up.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (CACHE, RESULTS, WORDS, environment, generate_texts, measure, resolve_device,  # noqa: E402
                    resolve_dtype, table, write_json)

SHAPES = {  # GPT2Config keywords
    "tiny": dict(n_embd=64, n_layer=2, n_head=4),
    "gpt2-small": dict(n_embd=768, n_layer=12, n_head=12),
    "gpt2-medium": dict(n_embd=1024, n_layer=24, n_head=16),
}
OURS_SCORE, OURS_GENERATE = "ours: Score stage", "ours: Generate stage"


def model_dir(shape: str, context: int) -> Path:
    """A random-weight GPT-2 of ``shape`` with a byte-level BPE trained on the bench words, saved once."""
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    directory = CACHE / f"gpt2-{shape}-{context}"
    if (directory / "config.json").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator([" ".join(WORDS)] * 20 + generate_texts(200, seed=1), vocab_size=4096,
                                special_tokens=["<|endoftext|>"], show_progress=False)
    trainer.save_model(str(directory))
    tokenizer = transformers.GPT2TokenizerFast(str(directory / "vocab.json"), str(directory / "merges.txt"))
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_positions=context, bos_token_id=0, eos_token_id=0,
                                     pad_token_id=0, **SHAPES[shape])
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(directory)
    return directory


def bench_score(path: Path, texts: list[str], device: torch.device, dtype: str, args: argparse.Namespace) -> list:
    import pyarrow as pa
    import transformers

    from actors.score import Score
    from actors.tokenize import Tokenize

    table = Tokenize(str(path), text_column="text", max_length=args.context)(pa.table({"text": texts}))
    ids = table["__input_ids"].to_pylist()
    scored = sum(len(row) - 1 for row in ids)
    stage = Score(str(path), context=args.context, dtype=dtype, device=str(device), threads=args.threads)
    timings = [measure(OURS_SCORE, lambda: stage(table), runs=args.runs, tokens=scored, rows=len(texts), device=device)]
    model = transformers.GPT2LMHeadModel.from_pretrained(path, torch_dtype=getattr(torch, dtype)).to(device).eval()

    def reference() -> None:
        with torch.inference_mode():
            for start in range(0, len(ids), args.batch_size):
                batch = ids[start:start + args.batch_size]
                width = max(len(row) for row in batch)
                tokens = torch.zeros(len(batch), width, dtype=torch.long)
                mask = torch.zeros_like(tokens)
                for i, row in enumerate(batch):
                    tokens[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
                tokens, mask = tokens.to(device), mask.to(device)
                logits = model(input_ids=tokens, attention_mask=mask).logits.float()
                logprobs = logits[:, :-1].log_softmax(-1).gather(2, tokens[:, 1:, None])[..., 0]
                (logprobs * mask[:, 1:]).sum(1).cpu()

    timings.append(measure(f"transformers padded, input order, batch {args.batch_size}", reference, runs=args.runs,
                           tokens=scored, rows=len(texts), device=device))
    return timings


def bench_generate(path: Path, texts: list[str], device: torch.device, dtype: str, args: argparse.Namespace) -> list:
    import pyarrow as pa
    import transformers

    from actors.generate import Generate
    from actors.tokenize import Tokenize

    room = args.context - args.new_tokens
    table = Tokenize(str(path), text_column="text", max_length=room)(pa.table({"text": texts}))
    generated = len(texts) * args.new_tokens  # no EOS in the way: the rows run to length
    stage = Generate(str(path), context=args.context, max_new_tokens=args.new_tokens, eos_token_id=None, dtype=dtype,
                     device=str(device), threads=args.threads, max_batch_tokens=args.generate_batch_tokens)
    timings = [measure(OURS_GENERATE, lambda: stage(table), runs=args.runs, tokens=generated, rows=len(texts),
                       device=device)]
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side, tokenizer.pad_token = "left", tokenizer.eos_token
    model = transformers.GPT2LMHeadModel.from_pretrained(path, torch_dtype=getattr(torch, dtype)).to(device).eval()

    def reference() -> None:
        for start in range(0, len(texts), args.batch_size):
            batch = tokenizer(texts[start:start + args.batch_size], padding=True, truncation=True, max_length=room,
                              return_tensors="pt").to(device)
            with torch.inference_mode():
                model.generate(**batch, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                               do_sample=False, pad_token_id=0)

    timings.append(measure(f"transformers generate, input order, batch {args.batch_size}", reference, runs=args.runs,
                           tokens=generated, rows=len(texts), device=device))
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="gpt2-small", choices=sorted(SHAPES))
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--dtype", default="auto", help="float32, float16, bfloat16 or auto (float16 on GPU)")
    parser.add_argument("--texts", type=int, default=None, help="generated texts (default: 120 on CPU, 2000 on GPU)")
    parser.add_argument("--context", type=int, default=512, help="the model's n_positions (default: 512)")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per prompt (default: 32)")
    parser.add_argument("--batch-size", type=int, default=None, help="the reference's batch (default: 16 CPU, 64 GPU)")
    parser.add_argument("--generate-batch-tokens", type=int, default=None,
                        help="our generate stage's prompt-token budget per micro-batch (default: the stage's)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", type=Path, default=None, help="JSON (default: bench/results/causal_<device>.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    gpu = device.type == "cuda"
    args.batch_size = args.batch_size or (64 if gpu else 16)
    texts = generate_texts(args.texts or (2000 if gpu else 120), max_words=min(300, args.context // 2))
    path = model_dir(args.shape, args.context)
    results = {"environment": environment(device, args.threads), "dtype": dtype, "shape": args.shape,
               "texts": len(texts), "new_tokens": args.new_tokens}
    reports = []
    for task, run, ours in (("score", bench_score, OURS_SCORE), ("generate", bench_generate, OURS_GENERATE)):
        print(f"{task}:", flush=True)
        timings = run(path, texts, device, dtype, args)
        baseline = timings[1].name
        results[task] = {"timings": [t.to_dict() for t in timings], "ratio": timings[1].median / timings[0].median}
        reports.append(table(f"\n{task}: GPT-2 {args.shape} on {device}, {dtype}, {args.threads} threads, "
                             f"{len(texts)} texts (median of {args.runs}; speed-up = {baseline} time / this time)",
                             timings, baseline))
    print("\n".join(reports), flush=True)
    write_json(args.output or RESULTS / f"causal_{device.type}.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
