"""The Ray Data pipeline: work units → read + tokenize (CPU tasks) → model actor pool → sink.

Each work unit (a row range of one input shard, see ``jobs.plan``) travels as one block
from start to end, so the sink writes one complete output file per unit.  The stages'
timings and token counts ride along as internal ``__`` columns and come back from the sink
as one small stats row per unit.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from fsspec.implementations.local import LocalFileSystem

from actors.common import ERROR, PADDED, ROW, SECONDS, SOURCE, TOKENS, UNIT, seconds_column, valid_rows
from actors.tokenize import Tokenize
from jobs.plan import Plan, filesystem, join_url
from jobs.spec import JobSpec

logger = logging.getLogger(__name__)

# Carried from the reader to the sink: where the unit's rows go and how many there must be.
OUTPUT = "__output"
UNIT_ROWS = "__unit_rows"
STAGES = ("read", "tokenize", "model", "write")
# Bad-row messages kept per unit for the manifest (all bad rows are counted).
_ERRORS_KEPT = 5


@dataclass
class Resources:
    """How the model actors are placed (decided once, from the spec and the cluster)."""

    num_gpus: float
    num_cpus: float
    threads: int
    min_actors: int
    max_actors: int
    task_cpus: float
    tokenize_actors: int

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def plan_resources(spec: JobSpec, cluster: dict[str, float]) -> Resources:
    """GPU actors when asked or when the cluster has GPUs now.  On CPUs the actors share all
    but a reserve of the CPUs (an actor pool holding every CPU starves the tokenize and write
    stages), and each runs as many torch threads as it holds CPUs, rounded up: Ray would give
    an actor with <= 1 CPU a single thread.  Small machines get one actor using every core:
    on 2 cores that beats two single-threaded actors."""
    total_cpus, total_gpus = float(cluster.get("CPU", 1)), float(cluster.get("GPU", 0))
    small = total_cpus < 4
    task_cpus = 0.25 if small else 1.0
    num_gpus = spec.num_gpus_per_actor if spec.num_gpus_per_actor is not None else (1.0 if total_gpus >= 1 else 0.0)
    if num_gpus > 0:
        low, high = spec.actors or (1, max(1, int(total_gpus // num_gpus)))
        num_cpus = spec.cpus_per_actor or 1.0
    else:
        budget = total_cpus - 2 * task_cpus  # room for a tokenize actor and a write task
        per_actor = min(4, int(total_cpus) // 4)
        low, high = spec.actors or (1, 1 if small else max(1, int(budget // per_actor)))
        num_cpus = spec.cpus_per_actor or budget / high
        if num_cpus * high > budget:
            logger.warning("%d actors x %g CPUs leave less than %g of the %g CPUs to the tokenize and write stages: "
                           "the job may stall waiting for CPUs; lower --actors or --cpus-per-actor",
                           high, num_cpus, 2 * task_cpus, total_cpus)
    return Resources(num_gpus=num_gpus, num_cpus=num_cpus, threads=spec.threads_per_actor or max(1, math.ceil(num_cpus)),
                     min_actors=low, max_actors=high, task_cpus=task_cpus,
                     # Tokenizing is tens of times cheaper than a forward: a few CPUs keep up with the model.
                     tokenize_actors=max(1, int(total_cpus) // 8))


def unit_items(plan: Plan) -> list[dict[str, Any]]:
    """One small dict per unit: which row groups of which file to read and where it goes."""
    items = []
    for unit in plan.units:
        shard = plan.shards[unit.shard]
        starts = np.concatenate([[0], np.cumsum(shard.row_group_rows)])
        groups = [g for g in range(len(shard.row_group_rows)) if starts[g] < unit.row_stop and starts[g + 1] > unit.row_start]
        items.append({"unit": unit.index, "url": shard.url, "name": shard.name, "row_groups": groups,
                      "skip": unit.row_start - int(starts[groups[0]]), "row_start": unit.row_start,
                      "rows": unit.row_stop - unit.row_start, "output": unit.output})
    return items


# -- read (CPU tasks, fused into the tokenize actors) ---------------------------------------------------------------
def read_unit(item: dict[str, Any], columns: list[str], storage_options: dict[str, Any]) -> pa.Table:
    """A unit's rows (only ``columns``) plus where they came from and where they go."""
    fs, path = filesystem(item["url"], storage_options)
    with fs.open(path, "rb") as handle:
        table = pq.ParquetFile(handle).read_row_groups(item["row_groups"], columns=columns)
    rows = item["rows"]
    table = table.slice(item["skip"], rows)
    return (table.append_column(UNIT, pa.array(np.full(rows, item["unit"], dtype=np.int32)))
            .append_column(SOURCE, pa.DictionaryArray.from_arrays(np.zeros(rows, np.int32), [item["name"]]))
            .append_column(ROW, pa.array(np.arange(item["row_start"], item["row_start"] + rows, dtype=np.int64)))
            .append_column(OUTPUT, pa.DictionaryArray.from_arrays(np.zeros(rows, np.int32), [item["output"]]))
            .append_column(UNIT_ROWS, pa.array(np.full(rows, rows, dtype=np.int32))))


def read_units(batch: pa.Table, *, columns: list[str], storage_options: dict[str, Any]) -> pa.Table:
    """Ray Data fuses this into the tokenize actors: the file is read where it is tokenized."""
    tables = []
    for item in batch.to_pylist():
        started = time.perf_counter()
        table = read_unit(item, columns, storage_options)
        tables.append(table.append_column(SECONDS + "read", seconds_column(time.perf_counter() - started, table.num_rows)))
    return pa.concat_tables(tables)


# -- sink (CPU tasks) --------------------------------------------------------------------------
def write_units(batch: pa.Table, *, output: str, storage_options: dict[str, Any], id_column: Optional[str],
                keep_columns: list[str], result_columns: list[str]) -> pa.Table:
    """Write each unit in the batch to its own file; return one stats row per unit."""
    stats = []
    units = batch[UNIT].to_numpy()
    for unit in np.unique(units):
        rows = batch.filter(pa.array(units == unit))
        stats.append(_write_unit(rows, output, storage_options, id_column, keep_columns, result_columns))
    return pa.Table.from_pylist(stats)


def _write_unit(rows: pa.Table, output: str, storage_options: dict[str, Any], id_column: Optional[str],
                keep_columns: list[str], result_columns: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    relative = rows[OUTPUT][0].as_py()
    row_index = rows[ROW].to_numpy()
    expected = rows[UNIT_ROWS][0].as_py()
    if rows.num_rows != expected or not np.array_equal(row_index, np.arange(row_index[0], row_index[0] + expected)):
        # Blocks are never split or reordered in this pipeline (see run()); guard the invariant
        # anyway, because a partial file would silently lose rows.
        raise RuntimeError(f"internal error: {relative} got {rows.num_rows} of {expected} rows, or out of order")
    if id_column:
        ids = rows[id_column]
    else:
        ids = pc.binary_join_element_wise(rows[SOURCE].cast(pa.string()), pc.cast(rows[ROW], pa.string()), "#")
    columns = {"id": ids, **{c: rows[c] for c in keep_columns}, **{c: rows[c] for c in result_columns}}
    valid = valid_rows(rows)
    if ERROR in rows.column_names:
        columns[ERROR] = rows[ERROR]
    table = pa.table(columns)
    path = join_url(output, relative)
    fs, fs_path = filesystem(path, storage_options)
    fs.makedirs(fs_path.rsplit("/", 1)[0], exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        # Local files appear whole or not at all; object stores commit on close anyway.
        partial = fs_path + ".incomplete"
        pq.write_table(table, partial)
        fs.mv(partial, fs_path)
    else:
        with fs.open(fs_path, "wb") as handle:
            pq.write_table(table, handle)
    seconds = {stage: float(pc.sum(rows[SECONDS + stage]).as_py() or 0.0) for stage in STAGES[:-1]}
    seconds["write"] = time.perf_counter() - started
    source = rows[SOURCE][0].as_py()
    errors = ([f"{source} row {r}: {e}" for r, e in zip(row_index.tolist(), rows[ERROR].to_pylist()) if e][:_ERRORS_KEPT]
              if ERROR in rows.column_names else [])
    return {
        "unit": int(rows[UNIT][0].as_py()), "output": relative, "rows": rows.num_rows,
        "tokens": int(pc.sum(rows[TOKENS]).as_py() or 0),
        "padded_tokens": int(pc.sum(rows[PADDED]).as_py() or 0),
        "bad_rows": int((~valid).sum()), "errors": json.dumps(errors),
        "seconds": json.dumps(seconds),
    }


# -- the pipeline ------------------------------------------------------------------------------
def run(spec: JobSpec, plan: Plan, stage_class: type, stage_kwargs: dict[str, Any], tokenizer_kwargs: dict[str, Any],
        result_columns: list[str], resources: Resources) -> list[dict[str, Any]]:
    """Execute the pipeline; return the sink's stats rows (one per unit, in unit order)."""
    context = ray.data.DataContext.get_current()
    # No block splitting: a unit must reach the sink as one block to become one whole file.
    context.target_max_block_size = None
    context.enable_progress_bars = True
    # A user-code error (a bad row) arrives as itself, not as a generic UserCodeException.
    context.raise_original_map_exception = True
    items = unit_items(plan)
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(read_units, batch_size=None, batch_format="pyarrow", num_cpus=resources.task_cpus,
                        fn_kwargs={"columns": plan.columns, "storage_options": spec.storage_options})
    # Tokenizers load once per actor; a separate CPU pool keeps tokenizing off the model actors.
    ds = ds.map_batches(
        Tokenize, batch_size=None, batch_format="pyarrow", num_cpus=resources.task_cpus,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=resources.tokenize_actors),
        fn_constructor_kwargs=tokenizer_kwargs,
    )
    ds = ds.map_batches(
        stage_class, batch_size=None, batch_format="pyarrow", num_gpus=resources.num_gpus, num_cpus=resources.num_cpus,
        # The whole input is known up front: start every actor at once rather than scaling up
        # step by step; two blocks in flight per actor keep it fed without hoarding the tail.
        compute=ray.data.ActorPoolStrategy(min_size=resources.min_actors, max_size=resources.max_actors,
                                           initial_size=resources.max_actors, max_tasks_in_flight_per_actor=2),
        fn_constructor_kwargs=stage_kwargs,
    )
    ds = ds.map_batches(
        write_units, batch_size=None, batch_format="pyarrow", num_cpus=resources.task_cpus,
        fn_kwargs={"output": spec.output, "storage_options": spec.storage_options, "id_column": spec.id_column,
                   "keep_columns": spec.keep_columns, "result_columns": result_columns},
    )
    stats: list[dict[str, Any]] = []
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        stats.extend(batch.to_pylist())
    return sorted(stats, key=lambda s: s["unit"])
