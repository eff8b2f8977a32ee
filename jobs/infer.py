"""Batch inference job: ``python -m jobs.infer --help``; with no arguments, the demo.

Plans and checks everything (inputs, columns, model) before Ray starts any actor, runs the
pipeline, commits the output (files, ``_manifest.json``, ``_SUCCESS``) and prints a summary.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import ray

from actors.classify import Classify
from actors.common import BadRowError
from actors.embed import Embed
from jobs import output, pipeline
from jobs.model import ModelError, ResolvedModel, resolve
from jobs.plan import InputError, Plan, plan
from jobs.sample import write_sample_dataset
from jobs.spec import DEMO_INPUT, DEMO_OUTPUT, JobSpec, SpecError, parse_spec

logger = logging.getLogger("jobs.infer")

EMBED_COLUMNS = ["embedding"]
CLASSIFY_COLUMNS = ["label", "label_id", "score"]


class JobError(RuntimeError):
    """The job failed for a reason the user can act on; the message says what to do."""


def apply_demo_defaults(spec: JobSpec) -> JobSpec:
    """Left unset, input and output are the demo's: the sample dataset (written if missing) and demo_output/."""
    if not spec.input:
        sample = Path(DEMO_INPUT)
        if not any(sample.glob("*.parquet")):
            write_sample_dataset(sample)
        spec.input = [str(sample)]
    if spec.output is None:
        spec.output = DEMO_OUTPUT
    return spec


def absolute_paths(spec: JobSpec) -> JobSpec:
    """Local paths made absolute: Ray workers need not share the driver's working directory."""
    def absolute(path: str) -> str:
        return path if "://" in path else str(Path(path).expanduser().resolve())

    spec.input = [absolute(p) for p in spec.input]
    spec.output = absolute(spec.output)
    if spec.model and Path(spec.model).expanduser().exists():
        spec.model = absolute(spec.model)
    if spec.cache_dir:
        spec.cache_dir = absolute(spec.cache_dir)
    return spec


def run_job(spec: JobSpec) -> dict[str, Any]:
    """Run a job to the end; return its manifest (which includes the summary)."""
    started_at = datetime.now(timezone.utc)
    started = time.perf_counter()
    spec = absolute_paths(apply_demo_defaults(spec))
    model = resolve(spec)
    columns = list(dict.fromkeys(c for c in [spec.text_column, spec.text_pair_column, spec.id_column, *spec.keep_columns] if c))
    work = plan(spec.input, columns, spec.max_rows_per_file, spec.storage_options)
    logger.info("%d rows in %d input file(s), %d work unit(s)", work.num_rows, len(work.shards), len(work.units))
    planned = time.perf_counter()
    _connect(spec)
    resources = pipeline.plan_resources(spec, ray.cluster_resources())
    connected = time.perf_counter()
    logger.info("model actors: %s", resources)
    previous = output.start(spec.output, spec.storage_options)
    stage_class, stage_kwargs = _model_stage(spec, model, resources)
    result_columns = EMBED_COLUMNS if spec.task == "embed" else CLASSIFY_COLUMNS + (["probs"] if spec.return_probs else [])
    try:
        stats = pipeline.run(spec, work, stage_class, stage_kwargs, _tokenize_stage(spec, model), result_columns,
                             resources) if work.units else []
    except Exception as err:
        bad_row = _find(err, BadRowError)
        if bad_row is not None:
            raise bad_row from None
        if isinstance(err, ray.exceptions.ActorDiedError) and err.actor_init_failed:
            raise JobError(f"A pipeline actor failed to start: {_last_error_line(err)}") from err
        raise
    finished = time.perf_counter()
    manifest = _manifest(spec, model, work, stats, resources, started_at,
                         {"plan": planned - started, "ray_startup": connected - planned, "pipeline": finished - connected})
    # Committing takes milliseconds: the total is measured just before it, so the manifest has it.
    manifest["summary"]["seconds"]["total"] = time.perf_counter() - started
    output.commit(spec.output, spec.storage_options, manifest, previous)
    return manifest


def _connect(spec: JobSpec) -> None:
    if ray.is_initialized():
        return
    ray.init(address=spec.ray_address)


def _tokenize_stage(spec: JobSpec, model: ResolvedModel) -> dict[str, Any]:
    return {"model": model.reference, "text_column": spec.text_column, "text_pair_column": spec.text_pair_column,
            "max_length": model.max_length, "on_bad_row": spec.on_bad_row,
            "drop_columns": [c for c in (spec.text_column, spec.text_pair_column)
                             if c and c not in (spec.id_column, *spec.keep_columns)],
            "storage_options": spec.storage_options, "cache_dir": spec.cache_dir}


def _model_stage(spec: JobSpec, model: ResolvedModel, resources: pipeline.Resources) -> tuple[type, dict[str, Any]]:
    common = {"model": model.reference, "dtype": spec.dtype, "threads": resources.threads, "batch_size": spec.batch_size,
              "max_batch_tokens": spec.max_batch_tokens, "pad_token_id": model.pad_token_id,
              "storage_options": spec.storage_options, "cache_dir": spec.cache_dir,
              "expected_weights_digest": model.weights_digest,
              "device": "cuda" if resources.num_gpus > 0 else "cpu"}
    if spec.task == "embed":
        return Embed, {**common, "pooling": model.pooling, "normalize": model.normalize, "embedding_dtype": spec.embedding_dtype}
    return Classify, {**common, "return_probs": spec.return_probs}


def _find(err: BaseException, kind: type) -> Optional[BaseException]:
    """The innermost exception of ``kind`` in ``err``'s chain: a remote error arrives wrapped
    (``RayTaskError(BadRowError)``, whose ``.cause`` is the original with a clean message)."""
    found: Optional[BaseException] = None
    seen: set[int] = set()
    current: Optional[BaseException] = err
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            found = current
        seen.add(id(current))
        current = getattr(current, "cause", None) or current.__cause__
    return found


def _last_error_line(err: BaseException) -> str:
    """The original ``SomeError: message`` line of a remote traceback (Ray sends it as text)."""
    lines = [line for line in str(err).splitlines() if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return lines[-1] if lines else str(err)


def _manifest(spec: JobSpec, model: ResolvedModel, work: Plan, stats: list[dict[str, Any]], resources: pipeline.Resources,
              started_at: datetime, phases: dict[str, float]) -> dict[str, Any]:
    missing = sorted({u.output for u in work.units} - {row["output"] for row in stats})
    if missing:
        raise JobError(f"internal error: no output was committed for {', '.join(missing[:5])}")
    by_shard: dict[int, list[dict[str, Any]]] = {}
    for row in stats:
        by_shard.setdefault(work.units[row["unit"]].shard, []).append(row)
    shards = [{"input": shard.url, "name": shard.name, "rows": shard.num_rows,
               "tokens": sum(r["tokens"] for r in by_shard.get(index, [])),
               "bad_rows": sum(r["bad_rows"] for r in by_shard.get(index, [])),
               "outputs": [r["output"] for r in by_shard.get(index, [])]}
              for index, shard in enumerate(work.shards)]
    summary = _summary(stats, len(work.shards), phases)
    return {
        "job": spec.to_dict(), "model": model.to_dict(), "resources": resources.to_dict(),
        "ray_version": ray.__version__, "started_at": started_at.isoformat(),
        "finished_at": datetime.now(timezone.utc).isoformat(), "shards": shards, "summary": summary,
        "errors": {"bad_rows": summary["bad_rows"], "examples": [e for r in stats for e in json.loads(r["errors"])][:20]},
    }


def _summary(stats: list[dict[str, Any]], shards: int, phases: dict[str, float]) -> dict[str, Any]:
    """Totals and rates; rates are over the pipeline's wall time (Ray start-up excluded)."""
    stage_seconds = {stage: 0.0 for stage in pipeline.STAGES}
    for row in stats:
        for stage, seconds in json.loads(row["seconds"]).items():
            stage_seconds[stage] += seconds
    rows = sum(r["rows"] for r in stats)
    tokens = sum(r["tokens"] for r in stats)
    padded = sum(r["padded_tokens"] for r in stats)
    wall = phases["pipeline"]
    return {
        "rows": rows, "shards": shards, "files": len(stats), "tokens": tokens, "padded_tokens": padded,
        "padding_ratio": 1 - tokens / padded if padded else 0.0, "bad_rows": sum(r["bad_rows"] for r in stats),
        "rows_per_second": rows / wall if wall else 0.0, "tokens_per_second": tokens / wall if wall else 0.0,
        "seconds": {**phases, "stages_busy": stage_seconds},
    }


def format_summary(manifest: dict[str, Any]) -> str:
    s = manifest["summary"]
    busy = s["seconds"]["stages_busy"]
    job = manifest["job"]
    return "\n".join([
        f"{job['task']}: {s['rows']:,} rows from {s['shards']} input file(s) → {job['output']} ({s['files']} file(s), _manifest.json, _SUCCESS)",
        f"  model      {manifest['model']['model_class']} from {manifest['model']['reference']}",
        f"  tokens     {s['tokens']:,} (padded {s['padded_tokens']:,}, padding {100 * s['padding_ratio']:.1f}%), bad rows {s['bad_rows']}",
        f"  speed      {s['rows_per_second']:,.1f} rows/s, {s['tokens_per_second']:,.0f} tok/s over {s['seconds']['pipeline']:.1f} s of pipeline",
        f"  time       plan {s['seconds']['plan']:.1f} s, Ray start {s['seconds']['ray_startup']:.1f} s, "
        f"pipeline {s['seconds']['pipeline']:.1f} s, total {s['seconds']['total']:.1f} s",
        "  stage busy " + ", ".join(f"{k} {v:.1f} s" for k, v in busy.items()) + " (summed over workers)",
    ])


def main(argv: Optional[list[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        manifest = run_job(parse_spec(argv))
    except (SpecError, InputError, ModelError, BadRowError, JobError) as err:
        logger.error("%s", err)
        return 2
    print(format_summary(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
