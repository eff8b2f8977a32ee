"""The job spec: every setting of a run, from defaults < a YAML/JSON spec file < command-line flags.

One table (``OPTIONS``) defines each setting's default, type and help, so the CLI, the spec
file and the manifest can't drift apart.  Left at their defaults, the settings run the demo:
the packaged MiniLM model over a sample dataset written to ``data/sample`` if missing.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import yaml

from actors.common import BAD_ROW_POLICIES, DTYPES, EMBEDDING_DTYPES, POOLINGS, TRUNCATED
from autoload.storage import redact_options, redact_text

TASKS = ("embed", "classify")
BAD_SHARD_POLICIES = ("error", "skip")

DEMO_INPUT = "data/sample"
DEMO_OUTPUT = "demo_output"


class SpecError(ValueError):
    """A setting is missing, unknown or has a bad value (the message names it)."""


@dataclass
class JobSpec:
    task: str = "embed"
    model: Optional[str] = None
    input: list[str] = field(default_factory=list)
    output: Optional[str] = None
    text_column: str = "text"
    text_pair_column: Optional[str] = None
    id_column: Optional[str] = None
    keep_columns: list[str] = field(default_factory=list)
    pooling: Optional[str] = None
    normalize: Optional[bool] = None
    embedding_dtype: str = "float32"
    return_probs: bool = False
    max_length: Optional[int] = None
    dtype: str = "auto"
    batch_size: Optional[int] = None  # None: the model stage's per-device default
    max_batch_tokens: Optional[int] = None
    num_gpus_per_actor: Optional[float] = None
    cpus_per_actor: Optional[float] = None
    threads_per_actor: Optional[int] = None
    actors: Optional[tuple[int, int]] = None
    max_rows_per_file: int = 50_000
    on_bad_row: str = "error"
    on_bad_shard: str = "error"
    overwrite: bool = False
    storage_options: dict[str, Any] = field(default_factory=dict)
    cache_dir: Optional[str] = None
    ray_address: Optional[str] = None
    dashboard: bool = False
    tokenize_pool: Optional[bool] = None
    stall_timeout: float = 300.0

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        """Plain JSON-able dict; credentials (storage-option secrets, passwords in URLs) replaced by
        "***" unless ``redact=False``."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["actors"] = list(self.actors) if self.actors else None
        if redact:
            data["storage_options"] = redact_options(self.storage_options)
            data["input"] = [redact_text(url) for url in self.input]
            for name in ("model", "output", "cache_dir", "ray_address"):
                if data[name]:
                    data[name] = redact_text(data[name])
        return data


# Parsers of a setting's value, from a flag (a string) or a spec file (any YAML value).
def _csv(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise SpecError(f"expected a comma-separated string or a list of strings, got {value!r}")


def _inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return _csv(value)


def _actors(value: Any) -> tuple[int, int]:
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    try:
        parts = [int(v) for v in items]
    except (TypeError, ValueError):
        raise SpecError(f"actors must be N or MIN,MAX (whole numbers), got {value!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not 1 <= parts[0] <= parts[1]:
        raise SpecError(f"actors must be N or MIN,MAX with 1 <= MIN <= MAX, got {value!r}")
    return parts[0], parts[1]


def _json_dict(value: Any) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise SpecError(f"storage options must be a JSON object, got {value!r} ({err})") from None
    if not isinstance(value, dict):
        raise SpecError(f"storage options must be a JSON object (a mapping), got {value!r}")
    return value


def _choice(choices: tuple[str, ...]):
    def parse(value: Any) -> str:
        if value not in choices:
            raise SpecError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value
    return parse


def _positive(kind: type):
    def parse(value: Any) -> Any:
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise SpecError(f"expected a {kind.__name__}, got {value!r}") from None
        if number <= 0 or (kind is int and isinstance(value, float) and value != number):
            raise SpecError(f"expected a positive {kind.__name__}, got {value!r}")
        return number
    return parse


def _non_negative_float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"expected a number, got {value!r}") from None
    if number < 0:
        raise SpecError(f"expected a number >= 0, got {value!r}")
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise SpecError(f"expected true or false, got {value!r}")


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"expected a non-empty string, got {value!r}")
    return value


# name → (argparse kwargs, value parser). The help texts are the settings' documentation.
OPTIONS: dict[str, tuple[dict[str, Any], Any]] = {
    "task": ({"choices": TASKS, "help": "embed: sentence embeddings; classify: sequence-classification labels and scores (default: embed)"}, _choice(TASKS)),
    "model": ({"metavar": "REF", "help": "model directory, file or fsspec URL (s3://bucket/model/); default: the packaged all-MiniLM-L6-v2 (demo)"}, _str),
    "input": ({"metavar": "URL", "action": "append", "help": "Parquet input: a file, a directory/prefix (searched recursively), a glob, or a comma-separated list; repeatable (default: data/sample, created if missing: the demo)"}, _inputs),
    "output": ({"metavar": "URL", "help": "output directory URL, not inside an input; one Parquet file per input shard, each committed with a record in _commits/, then _manifest.json and _SUCCESS. A rerun resumes: committed files are skipped (default: demo_output)"}, _str),
    "text_column": ({"metavar": "NAME", "help": "column holding the text (default: text)"}, _str),
    "text_pair_column": ({"metavar": "NAME", "help": "second text of a pair (e.g. for cross-encoders / NLI classifiers)"}, _str),
    "id_column": ({"metavar": "NAME", "help": "column copied to the output's 'id'; default: '<input file>#<row index>', stable across reruns"}, _str),
    "keep_columns": ({"metavar": "A,B", "help": "input columns copied to the output unchanged"}, _csv),
    "pooling": ({"choices": POOLINGS, "help": "embed: how token states become one vector; default: the model's sentence-transformers 1_Pooling/config.json, else mean"}, _choice(POOLINGS)),
    "normalize": ({"action": argparse.BooleanOptionalAction, "help": "embed: L2-normalise embeddings; default: on when the model's modules.json has a Normalize module"}, _bool),
    "embedding_dtype": ({"choices": EMBEDDING_DTYPES, "help": "embed: value type of the embedding column (default: float32)"}, _choice(EMBEDDING_DTYPES)),
    "return_probs": ({"action": argparse.BooleanOptionalAction, "help": "classify: also write 'probs', every label's probability"}, _bool),
    "max_length": ({"metavar": "N", "help": "truncate inputs to N tokens; default: the model's limit (sentence_bert_config.json max_seq_length, else the tokenizer's / position table's)"}, _positive(int)),
    "dtype": ({"choices": DTYPES, "help": "model weights' dtype; auto = float16 on GPU, float32 on CPU (default: auto)"}, _choice(DTYPES)),
    "batch_size": ({"metavar": "N", "help": "most rows in one model forward (default: 128 on CPU, 1024 on GPU)"}, _positive(int)),
    "max_batch_tokens": ({"metavar": "N", "help": "most tokens in one model forward (rows x longest row); rows are sorted by length and cut by this budget (default: 2048 on CPU, where small forwards measured fastest, 65536 on GPU)"}, _positive(int)),
    "num_gpus_per_actor": ({"metavar": "G", "help": "GPUs per model actor; default: 1 when the cluster has GPUs now, else 0 (CPU). Set 1 on autoscaling clusters that start without GPU nodes"}, _non_negative_float),
    "cpus_per_actor": ({"metavar": "C", "help": "CPUs reserved per model actor; default: 1 with GPUs; on CPUs its threads, or less where the actors and a reserve for writing would not fit"}, _positive(float)),
    "threads_per_actor": ({"metavar": "N", "help": "torch threads per model actor; default: 1 on CPUs (one single-threaded actor per CPU measured fastest), with GPUs its CPUs rounded up"}, _positive(int)),
    "actors": ({"metavar": "MIN,MAX", "help": "model actor pool size, autoscaling between MIN and MAX (it starts at MAX); default: 1,<GPUs in the cluster> with GPUs, on CPUs 1,<CPUs / threads per actor> (capped so the weight copies fit in half the memory). Give MAX on autoscaling clusters"}, _actors),
    "tokenize_pool": ({"action": argparse.BooleanOptionalAction, "help": "tokenize in a CPU actor pool of its own, handing token ids to the model actors; default: on with GPUs (tokenizing overlaps the GPU), off on CPUs (the model actors tokenize their own rows: no hand-off, no extra process)"}, _bool),
    "stall_timeout": ({"metavar": "SECONDS", "help": "fail the job, naming what waits for which resource, when no row reaches the model and no file is committed for this long while work waits for resources Ray can't give (a plan that starves the read/write tasks of CPU, actors no node fits); no progress with nothing waiting (a slow model download, nodes the autoscaler is starting) is only logged (default: 300)"}, _positive(float)),
    "max_rows_per_file": ({"metavar": "N", "help": "split input files with more rows into N-row work units and output files (default: 50000)"}, _positive(int)),
    "on_bad_row": ({"choices": BAD_ROW_POLICIES, "help": "null / empty / non-string / non-UTF-8 text: 'error' stops the job naming file and row (default); 'flag' writes the row with a null output and an 'error' message. Text over the model's limit is truncated, never an error: the 'truncated' column marks it"}, _choice(BAD_ROW_POLICIES)),
    "on_bad_shard": ({"choices": BAD_SHARD_POLICIES, "help": "an input file that can't be read (corrupt Parquet): 'error' stops the job naming it (default); 'skip' leaves its rows out and records it in the manifest and summary"}, _choice(BAD_SHARD_POLICIES)),
    "overwrite": ({"action": argparse.BooleanOptionalAction, "help": "recompute every output file, even those a previous run of the same job committed, and allow replacing the output of a different job (other model or settings). Default: resume, skipping committed files; refuse to mix jobs"}, _bool),
    "storage_options": ({"metavar": "JSON", "help": "fsspec options for input, output and model URLs, e.g. '{\"endpoint_url\": \"http://...\"}'; default: credentials and endpoint from the environment (AWS_*)"}, _json_dict),
    "cache_dir": ({"metavar": "DIR", "help": "local model cache on every node; remote models are downloaded once per node (default: ~/.cache/autoinfer)"}, _str),
    "ray_address": ({"metavar": "ADDR", "help": "Ray cluster to connect to: host:port, ray://host:port, or 'auto' (Ray's own discovery: the last `ray start` on this machine or a running local cluster); fails within 10 s naming the address when nothing answers there. Default: RAY_ADDRESS (set by `ray job submit`), else a fresh local Ray (never a cluster found through a leftover /tmp/ray/ray_current_cluster file)"}, _str),
    "dashboard": ({"action": argparse.BooleanOptionalAction, "help": "start the Ray dashboard with the local Ray the job starts (default: off; its processes take CPU from the model on small machines). A cluster's own dashboard is unaffected"}, _bool),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.infer",
        description="Batch inference on Ray: Parquet shards → tokenize → model actors → Parquet, _manifest.json, _SUCCESS. "
                    "With no arguments it runs the demo (packaged MiniLM, sample data in data/sample, output in demo_output/).",
    )
    parser.add_argument("--spec", metavar="FILE", help="YAML or JSON file with any of the settings below (keys with _ or -); flags override it")
    for name, (kwargs, _) in OPTIONS.items():
        # SUPPRESS: only flags actually given appear, so they override the spec file and nothing else.
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS, **kwargs)
    return parser


def parse_spec(argv: Optional[list[str]] = None) -> JobSpec:
    """Defaults, then the ``--spec`` file, then flags; every value checked."""
    given = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    spec_file = given.pop("spec", None)
    if spec_file:
        values.update(read_spec_file(Path(spec_file)))
    for name, value in given.items():
        if name == "input":  # repeated --input flags, each possibly comma-separated
            value = [item for flag in value for item in _csv(flag)]
        values[name] = value
    return make_spec(values, origin="command line" if not spec_file else f"{spec_file} / command line")


def read_spec_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise SpecError(f"Can't read the job spec {path}: {err}") from None
    except yaml.YAMLError as err:
        raise SpecError(f"The job spec {path} is not valid YAML/JSON: {err}") from None
    if not isinstance(data, dict):
        raise SpecError(f"The job spec {path} must be a mapping of setting: value, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def make_spec(values: dict[str, Any], origin: str = "spec") -> JobSpec:
    unknown = sorted(set(values) - set(OPTIONS))
    if unknown:
        raise SpecError(f"Unknown setting(s) {', '.join(unknown)} in the {origin}. Known: {', '.join(OPTIONS)}")
    parsed: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        try:
            parsed[name] = OPTIONS[name][1](value)
        except SpecError as err:
            raise SpecError(f"--{name.replace('_', '-')} ({origin}): {err}") from None
    spec = JobSpec(**parsed)
    _check_columns(spec)
    return spec


def _check_columns(spec: JobSpec) -> None:
    named = [spec.text_column, spec.text_pair_column, spec.id_column, *spec.keep_columns]
    internal = [c for c in named if c and c.startswith("__")]
    if internal:
        raise SpecError(f"Column names starting with '__' are reserved for the job's own use: {', '.join(internal)}")
    results = ["embedding"] if spec.task == "embed" else ["label", "label_id", "score", "probs"]
    outputs = ["id", *spec.keep_columns, *results, TRUNCATED] + (["error"] if spec.on_bad_row == "flag" else [])
    clashes = sorted({c for c in outputs if outputs.count(c) > 1})
    if clashes:
        raise SpecError(f"--keep-columns would write column(s) {', '.join(clashes)} twice (the output already has "
                        f"{', '.join(['id', *results, TRUNCATED])}): rename them in the input or drop them from --keep-columns")
