"""The job spec: every setting of a run, from defaults < a YAML/JSON spec file < command-line flags.

Settings come in three groups, each declared once as :class:`jobs.options.Option` so the CLI,
the spec file and the manifest can't drift apart:

- ``GENERAL``: what every job has (model, input, output, columns, policies, storage, Ray);
- ``PLACEMENT``: how the model actors are placed (``JobSpec.placement``, see jobs/placement.py);
- each task's own options (``JobSpec.task_options``), declared by the task (jobs/tasks/).

An option of another task than the chosen one is refused naming both.  Left at their
defaults, the settings run the demo: the packaged MiniLM model over a sample dataset written
to ``data/sample`` if missing.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import yaml

from actors.common import BAD_ROW_POLICIES, DTYPES, ERROR, TRUNCATED
from autoload.storage import redact_options, redact_text
from jobs import options as parse
from jobs.options import SWITCH, Option, SpecError
from jobs.task import Task, builtin_names, get_task, known_tasks

BAD_SHARD_POLICIES = ("error", "skip")
GENERATED_ID = "id"

# `{date}` or `{date:FORMAT}` (strftime) in --input / --output: the run's date.
DATE_FIELD = re.compile(r"\{date(?::([^{}]*))?\}")
RUN_DATE_ENV = "AUTOINFER_RUN_DATE"

DEMO_INPUT = "data/sample"
DEMO_OUTPUT = "demo_output"

__all__ = ["JobSpec", "Placement", "SpecError", "parse_spec", "make_spec", "build_parser", "DEMO_INPUT", "DEMO_OUTPUT"]


@dataclass
class Placement:
    """How the model actors are placed; every field left None is planned from the cluster."""

    num_gpus_per_actor: Optional[float] = None
    cpus_per_actor: Optional[float] = None
    threads_per_actor: Optional[int] = None
    actors: Optional[tuple[int, int]] = None
    tokenize_pool: Optional[bool] = None

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["actors"] = list(self.actors) if self.actors else None
        return data


@dataclass
class JobSpec:
    task: str = "embed"
    model: Optional[str] = None
    input: list[str] = field(default_factory=list)
    output: Optional[str] = None
    text_column: str = "text"
    text_pair_column: Optional[str] = None
    lang: Optional[str] = None  # the language of every row, for models that take languages (XLM, FlauBERT)
    lang_column: Optional[str] = None  # or a column of per-row language codes
    id_column: Optional[str] = None
    keep_columns: list[str] = field(default_factory=list)
    max_length: Optional[int] = None
    dtype: str = "auto"
    batch_size: Optional[int] = None  # None: the model stage's per-device default
    max_batch_tokens: Optional[int] = None
    stall_timeout: float = 300.0
    max_rows_per_file: int = 50_000
    target_file_bytes: Optional[int] = None
    on_bad_row: str = "error"
    on_bad_shard: str = "error"
    overwrite: bool = False
    verify: bool = False
    storage_options: dict[str, Any] = field(default_factory=dict)
    cache_dir: Optional[str] = None
    ray_address: Optional[str] = None
    dashboard: bool = False
    run_date: Optional[str] = None  # YYYY-MM-DD that {date} in input/output stood for (None: no {date} used)
    placement: Placement = field(default_factory=Placement)
    task_options: dict[str, Any] = field(default_factory=dict)

    def make_task(self) -> Task:
        return get_task(self.task)(self.task_options)

    @property
    def id_output(self) -> str:
        """The output column holding row ids: the user's id column under its own name, else ``id``."""
        return self.id_column or GENERATED_ID

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        """Plain JSON-able dict; credentials (storage-option secrets, passwords in URLs) replaced by
        "***" unless ``redact=False``."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["placement"] = self.placement.to_dict()
        data["task_options"] = dict(self.task_options)
        if redact:
            data["storage_options"] = redact_options(self.storage_options)
            data["input"] = [redact_text(url) for url in self.input]
            for name in ("model", "output", "cache_dir", "ray_address"):
                if data[name]:
                    data[name] = redact_text(data[name])
        return data


GENERAL: tuple[Option, ...] = (
    Option("task", "what to compute (see TASKS below): built in: {tasks}; or module:Class for a task of your own (default: embed)", parse.text, flag={"metavar": "TASK"}),
    Option("model", "model directory, file or fsspec URL (s3://bucket/model/); default: the packaged all-MiniLM-L6-v2 (demo)", parse.text, flag={"metavar": "REF"}),
    Option("input", "Parquet input: a file, a directory/prefix (searched recursively), a glob, or a comma-separated list; repeatable (default: data/sample, created if missing: the demo)", parse.inputs, flag={"metavar": "URL", "action": "append"}),
    Option("output", "output directory URL, not inside an input; one Parquet file per input shard, each committed with a record in _commits/, then _manifest.json and _SUCCESS. A rerun resumes: committed files are skipped (default: demo_output)", parse.text, flag={"metavar": "URL"}),
    Option("text_column", "column holding the text (default: text)", parse.text, flag={"metavar": "NAME"}),
    Option("text_pair_column", "second text of a pair (e.g. for cross-encoders / NLI classifiers)", parse.text, flag={"metavar": "NAME"}),
    Option("lang", "language code of every row (e.g. fr), for models that take languages (XLM, FlauBERT): its id in the model's config lang2id goes to the model with every token, and its Moses rules tokenize the text. Default: no languages (English tokenization)", parse.text, flag={"metavar": "CODE"}),
    Option("lang_column", "input column holding each row's language code, as --lang per row; a code the model's lang2id lacks is a bad row (see --on-bad-row)", parse.text, flag={"metavar": "NAME"}),
    Option("id_column", "input column holding each row's id, written to the output under the same name (so outputs join back on it); default: an 'id' column of '<input file>#<row index>', stable across reruns", parse.text, flag={"metavar": "NAME"}),
    Option("keep_columns", "input columns copied to the output unchanged", parse.csv, flag={"metavar": "A,B"}),
    Option("max_length", "truncate inputs to N tokens; default: the model's limit (sentence_bert_config.json max_seq_length, else the tokenizer's / position table's)", parse.positive(int), flag={"metavar": "N"}),
    Option("dtype", "model weights' dtype; auto = float16 on GPU, float32 on CPU (default: auto)", parse.choice(DTYPES), flag={"choices": DTYPES}),
    Option("batch_size", "most rows in one model forward (default: 128 on CPU, 1024 on GPU)", parse.positive(int), flag={"metavar": "N"}),
    Option("max_batch_tokens", "most tokens in one model forward (rows x longest row); rows are sorted by length and cut by this budget (default: 2048 on CPU, where small forwards measured fastest, 65536 on GPU)", parse.positive(int), flag={"metavar": "N"}),
    Option("stall_timeout", "fail the job, naming what waits for which resource, when no row reaches the model and no file is committed for this long while work waits for resources Ray can't give (a plan that starves the read/write tasks of CPU, actors no node fits); no progress with nothing waiting (a slow model download, nodes the autoscaler is starting) is only logged (default: 300)", parse.positive(float), flag={"metavar": "SECONDS"}),
    Option("max_rows_per_file", "split input files with more rows into N-row work units and output files (default: 50000)", parse.positive(int), flag={"metavar": "N"}),
    Option("target_file_bytes", "aim output files at about this size (e.g. 256MiB): input files whose output would be larger are split into that many rows per file, estimated from the output's columns (an embedding of 384 float32 is 1.5 KiB a row); --max-rows-per-file still caps the rows. Small input files are not merged: each stays one output file (default: no size target)", parse.byte_size, flag={"metavar": "BYTES"}, identity=False),
    Option("on_bad_row", "null / empty / non-string / non-UTF-8 text: 'error' stops the job naming file and row (default); 'flag' writes the row with a null output and an 'error' message. Text over the model's limit is truncated, never an error: the 'truncated' column marks it", parse.choice(BAD_ROW_POLICIES), flag={"choices": BAD_ROW_POLICIES}),
    Option("on_bad_shard", "an input file that can't be read (corrupt Parquet): 'error' stops the job naming it (default); 'skip' leaves its rows out and records it in the manifest and summary", parse.choice(BAD_SHARD_POLICIES), flag={"choices": BAD_SHARD_POLICIES}),
    Option("overwrite", "recompute every output file, even those a previous run of the same job committed, and allow replacing the output of a different job (other model or settings). Default: resume, skipping committed files; refuse to mix jobs", parse.boolean, flag=SWITCH),
    Option("verify", "on resume, read every committed output file whole and check its SHA-256 against its commit record, recomputing those that differ. Without it a committed file is kept when its size and version (ETag on object stores, modification time on disks) are the record's", parse.boolean, flag=SWITCH, identity=False),
    Option("storage_options", "fsspec options for input, output and model URLs, e.g. '{\"endpoint_url\": \"http://...\"}': given flat they apply to every object store (not to http(s):// or local paths); nested under a protocol ('{\"s3\": {...}, \"http\": {\"headers\": {...}}}') they apply to its URLs only. Default: credentials and endpoint from the environment (AWS_*)", parse.json_dict, flag={"metavar": "JSON"}),
    Option("cache_dir", "local model cache on every node; remote models are downloaded once per node (default: ~/.cache/autoinfer)", parse.text, flag={"metavar": "DIR"}),
    Option("ray_address", "Ray cluster to connect to: host:port, ray://host:port, or 'auto' (Ray's own discovery: the last `ray start` on this machine or a running local cluster); fails within 10 s naming the address when nothing answers there. Default: RAY_ADDRESS (set by `ray job submit`), else a fresh local Ray (never a cluster found through a leftover /tmp/ray/ray_current_cluster file)", parse.text, flag={"metavar": "ADDR"}),
    Option("run_date", "the date that {date} in --input and --output stands for, YYYY-MM-DD ({date:%Y/%m/%d} formats it; e.g. --output s3://bucket/embeddings/{date}/ writes one partition per day, and a retried run of the same day resumes it). Default: $AUTOINFER_RUN_DATE, else today in UTC", parse.iso_date, flag={"metavar": "YYYY-MM-DD"}, identity=False),
    Option("dashboard", "start the Ray dashboard with the local Ray the job starts (default: off; its processes take CPU from the model on small machines). A cluster's own dashboard is unaffected", parse.boolean, flag=SWITCH),
)

PLACEMENT: tuple[Option, ...] = (
    Option("num_gpus_per_actor", "GPUs per model actor; default: 1 when the cluster has GPUs now, else 0 (CPU). Set 1 on autoscaling clusters that start without GPU nodes", parse.non_negative_float, flag={"metavar": "G"}),
    Option("cpus_per_actor", "CPUs reserved per model actor; default: 1 with GPUs; on CPUs its threads, or less so that every node keeps 0.25 CPU free for the read and write tasks however Ray packs the actors", parse.positive(float), flag={"metavar": "C"}),
    Option("threads_per_actor", "torch threads per model actor; default: 1 on CPUs (one single-threaded actor per CPU measured fastest), with GPUs its CPUs rounded up", parse.positive(int), flag={"metavar": "N"}),
    Option("actors", "model actor pool size, autoscaling between MIN and MAX (it starts at MAX); default: planned per node (jobs/placement.py): with GPUs one actor per GPU, on CPUs one per CPU / --threads-per-actor, no more than fit in half of each node's memory, nor than units to compute. Give MAX on autoscaling clusters", parse.actors, flag={"metavar": "MIN,MAX"}),
    Option("tokenize_pool", "tokenize in a CPU actor pool of its own, handing token ids to the model actors; default: on with GPUs (tokenizing overlaps the GPU), off on CPUs (the model actors tokenize their own rows: no hand-off, no extra process)", parse.boolean, flag=SWITCH),
)

_GROUPS = ("placement", "task_options")  # spec-file mappings whose keys are settings too


def task_classes(argv_task: Optional[str] = None) -> dict[str, type[Task]]:
    """The tasks whose options the parser knows: every known one, plus ``argv_task`` when it
    names a task of the user's own (module:Class)."""
    tasks = dict(known_tasks())
    if argv_task and argv_task not in tasks:
        task = get_task(argv_task)
        tasks[task.name] = task
    return tasks


def task_options(tasks: dict[str, type[Task]]) -> dict[str, tuple[Option, list[str]]]:
    """Option name → (its declaration, the tasks that declare it).  Two tasks may share an
    option (say ``--top-k``) only with the same flag."""
    found: dict[str, tuple[Option, list[str]]] = {}
    for name, task in sorted(tasks.items()):
        for option in task.options:
            if option.name in found:
                first, owners = found[option.name]
                if dict(first.flag) != dict(option.flag):
                    raise RuntimeError(f"tasks {owners[0]} and {name} declare {option.flag_name} differently")
                owners.append(name)
            else:
                found[option.name] = (option, [name])
    clashes = sorted(set(found) & {o.name for o in GENERAL + PLACEMENT})
    if clashes:
        raise RuntimeError(f"task option(s) {', '.join(clashes)} clash with the job's own settings")
    return found


def build_parser(tasks: Optional[dict[str, type[Task]]] = None) -> argparse.ArgumentParser:
    tasks = tasks if tasks is not None else task_classes()
    parser = argparse.ArgumentParser(
        prog="python -m jobs.infer",
        description="Batch inference on Ray: Parquet shards → tokenize → model actors → Parquet, _manifest.json, _SUCCESS. "
                    "With no arguments it runs the demo (packaged MiniLM, sample data in data/sample, output in demo_output/).",
        epilog="TASKS: " + "; ".join(f"{name}: {task.help}" for name, task in sorted(tasks.items())),
    )
    parser.add_argument("--spec", metavar="FILE", help="YAML or JSON file with any of the settings below (keys with _ or -); flags override it")
    groups = [(parser, GENERAL), (parser.add_argument_group("placement of the model actors"), PLACEMENT)]
    for where, declared in groups:
        for option in declared:
            _add(where, option)
    groups_by_owners: dict[tuple[str, ...], Any] = {}
    for option, owners in task_options(tasks).values():
        key = tuple(owners)
        if key not in groups_by_owners:
            groups_by_owners[key] = parser.add_argument_group(f"options of --task {' / '.join(owners)}")
        _add(groups_by_owners[key], option)
    return parser


def _add(where: Any, option: Option) -> None:
    kwargs = option.argparse_kwargs()
    # argparse %-formats help texts: a literal % (strftime formats) is written %%.
    kwargs["help"] = kwargs["help"].replace("{tasks}", ", ".join(builtin_names())).replace("%", "%%")
    # SUPPRESS: only flags actually given appear, so they override the spec file and nothing else.
    where.add_argument(option.flag_name, dest=option.name, default=argparse.SUPPRESS, **kwargs)


def parse_spec(argv: Optional[list[str]] = None) -> JobSpec:
    """Defaults, then the ``--spec`` file, then flags; every value checked."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--task")
    first.add_argument("--spec")
    known, _ = first.parse_known_args(argv)
    values: dict[str, Any] = read_spec_file(Path(known.spec)) if known.spec else {}
    given = vars(build_parser(task_classes(known.task or values.get("task"))).parse_args(argv))
    given.pop("spec", None)
    for name, value in given.items():
        if name == "input":  # repeated --input flags, each possibly comma-separated
            value = [item for flag in value for item in parse.csv(flag)]
        values[name] = value
    return make_spec(values, origin="command line" if not known.spec else f"{known.spec} / command line")


def read_spec_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise SpecError(f"Can't read the job spec {path}: {err}") from None
    except yaml.YAMLError as err:
        raise SpecError(f"The job spec {path} is not valid YAML/JSON: {err}") from None
    if not isinstance(data, dict):
        raise SpecError(f"The job spec {path} must be a mapping of setting: value, got {type(data).__name__}")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key).replace("-", "_")
        if key in _GROUPS and isinstance(value, dict):  # the manifest's nested form reads back as a spec
            flat.update({str(k).replace("-", "_"): v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def make_spec(values: dict[str, Any], origin: str = "spec") -> JobSpec:
    general = {o.name: o for o in GENERAL}
    placement = {o.name: o for o in PLACEMENT}
    task_name = values.get("task") or JobSpec.task
    task = get_task(parse.text(task_name))
    own = {o.name: o for o in task.options}
    others = task_options(task_classes(task_name))
    parsed: dict[str, Any] = {}
    placed: dict[str, Any] = {}
    chosen: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name in general:
            parsed[name] = general[name].value(value, origin)
        elif name in placement:
            placed[name] = placement[name].value(value, origin)
        elif name in own:
            chosen[name] = own[name].value(value, origin)
        elif name in others:
            owners = others[name][1]
            raise SpecError(f"{others[name][0].flag_name} ({origin}) applies to --task {' / '.join(owners)}, "
                            f"not to --task {task.name}")
        else:
            known = [*general, *placement, *own]
            raise SpecError(f"Unknown setting {name} in the {origin}. Settings of --task {task.name}: {', '.join(known)}")
    parsed["task"] = task.name if ":" not in task_name else task_name
    if parsed.get("text_pair_column") and not task.takes_pairs:
        raise SpecError(f"--task {task.name} takes single texts, not pairs: drop --text-pair-column ({origin})")
    if "text_column" in parsed and not task.reads_text_column:
        own_columns = ", ".join(o.flag_name for o in task.options if o.name.endswith("_column"))
        raise SpecError(f"--task {task.name} reads its text from {own_columns}, not --text-column: drop --text-column "
                        f"({origin})")
    _fill_dates(parsed, origin)
    spec = JobSpec(**parsed, placement=Placement(**placed), task_options=chosen)
    _check_columns(spec)
    return spec


def _fill_dates(parsed: dict[str, Any], origin: str) -> None:
    """Replace ``{date}`` / ``{date:FORMAT}`` in the input and output URLs by the run date
    (``run_date``, else $AUTOINFER_RUN_DATE, else today in UTC), recorded in ``run_date``."""
    urls = [*parsed.get("input", []), parsed.get("output") or ""]
    if not any(DATE_FIELD.search(url) for url in urls):
        return
    if "run_date" not in parsed:
        given = os.environ.get(RUN_DATE_ENV)
        source = f"${RUN_DATE_ENV}" if given else None
        try:
            parsed["run_date"] = parse.iso_date(given) if given else datetime.datetime.now(datetime.timezone.utc).date().isoformat()
        except SpecError as err:
            raise SpecError(f"{source}: {err}") from None
    day = datetime.date.fromisoformat(parsed["run_date"])

    def fill(url: str) -> str:
        try:
            return DATE_FIELD.sub(lambda m: day.strftime(m.group(1) or "%Y-%m-%d"), url)
        except ValueError as err:
            raise SpecError(f"bad date format in {url!r} ({origin}): {err}") from None

    if parsed.get("input"):
        parsed["input"] = [fill(url) for url in parsed["input"]]
    if parsed.get("output"):
        parsed["output"] = fill(parsed["output"])


def _check_columns(spec: JobSpec) -> None:
    named = [spec.text_column, spec.text_pair_column, spec.id_column, spec.lang_column, *spec.keep_columns]
    if spec.lang and spec.lang_column:
        raise SpecError("give --lang (one language for every row) or --lang-column (a language per row), not both")
    internal = [c for c in named if c and c.startswith("__")]
    if internal:
        raise SpecError(f"Column names starting with '__' are reserved for the job's own use: {', '.join(internal)}")
    if spec.id_column and spec.id_column in spec.keep_columns:
        raise SpecError(f"--keep-columns names the id column {spec.id_column!r}: it is written once already, "
                        "under its own name; drop it from --keep-columns")


def output_columns(spec: JobSpec, results: list[str]) -> list[str]:
    """The output's columns in order, refusing names written twice: the id column, the kept
    columns, the task's ``results``, ``truncated`` and (flagging bad rows) ``error``."""
    columns = [spec.id_output, *spec.keep_columns, *results, TRUNCATED] + ([ERROR] if spec.on_bad_row == "flag" else [])
    clashes = sorted({c for c in columns if columns.count(c) > 1})
    if clashes:
        theirs = [spec.id_output, *results, TRUNCATED] + ([ERROR] if spec.on_bad_row == "flag" else [])
        raise SpecError(f"The output would hold column(s) {', '.join(clashes)} twice (--task {spec.task} writes "
                        f"{', '.join(theirs)}): rename them in the input or drop them from --keep-columns / --id-column")
    return columns
