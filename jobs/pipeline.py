"""The Ray Data pipeline: work units → read + tokenize (CPU actors) → model actor pool → sink.

On CPU-only clusters the model actors tokenize too (``actors.fused``): one actor pool.

Each work unit (a row range of one input shard, see ``jobs.plan``) travels as one block
from start to end, so the sink writes and commits one complete output file per unit
(``jobs.output``).  The stages' timings and token counts ride along as internal ``__``
columns and come back from the sink as one small stats row per unit.

Ray retries whatever a dying worker was doing: actors are restarted and their batches run
again, write tasks are rerun.  That is safe because every unit's output has one deterministic
name and is published whole, so a batch that runs twice still yields each row exactly once.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from actors.common import ERROR, PADDED, ROW, SECONDS, SOURCE, TOKENS, TRUNCATED, UNIT, seconds_column, valid_rows
from actors.fused import TokenizeAndRun
from actors.tokenize import Tokenize
from autoload.storage import object_version, redact_text, retry
from jobs import output, records
from jobs.placement import Resources
from jobs.plan import Plan, Unit, filesystem, is_bad_file, without_view_types
from jobs.progress import ProgressCounter, ProgressDisplay, ProgressReporter, StallError, Watchdog
from jobs.spec import GENERATED_ID, JobSpec

logger = logging.getLogger(__name__)

# Carried from the reader to the sink: where the unit's rows go, how many there must be, and
# the version of the input file they were read from (for the commit record).
OUTPUT = "__output"
UNIT_ROWS = "__unit_rows"
VERSION = "__version"
STAGES = ("read", "tokenize", "model", "write")
# Bad-row messages kept per unit for the manifest (all bad rows are counted).
_ERRORS_KEPT = 5
# A batch whose actor dies is retried on a restarted actor; one that kills its actor this many
# times (a poison batch) fails the job instead of looping forever.  Actors themselves restart
# without limit: on preemptible nodes they die for reasons unrelated to their work.
MODEL_ACTOR_FAULTS = {"max_restarts": -1, "max_task_retries": 4}
# Write tasks rerun after their worker dies: a unit's publish-then-record commit is idempotent.
WRITE_TASK_RETRIES = 4


class BadShardError(ValueError):
    """An input file can't be read (corrupt, truncated, or changed since the job planned)."""


def unit_items(plan: Plan, units: Optional[list[Unit]] = None) -> list[dict[str, Any]]:
    """One small dict per unit (all of the plan's by default): which row groups of which file
    to read, the file's planned version, and where the rows go."""
    items = []
    for unit in plan.units if units is None else units:
        shard = plan.shards[unit.shard]
        starts = np.concatenate([[0], np.cumsum(shard.row_group_rows)])
        groups = [g for g in range(len(shard.row_group_rows)) if starts[g] < unit.row_stop and starts[g + 1] > unit.row_start]
        items.append({"unit": unit.index, "url": shard.url, "name": shard.name, "row_groups": groups,
                      "skip": unit.row_start - int(starts[groups[0]]), "row_start": unit.row_start,
                      "rows": unit.row_stop - unit.row_start, "output": unit.output, "version": shard.version})
    return items


# -- read (CPU tasks, fused into the first actor pool) --------------------------------------------------------------
def read_unit(item: dict[str, Any], columns: list[str], storage_options: dict[str, Any]) -> pa.Table:
    """A unit's rows (only ``columns``) plus where they came from and where they go.

    Raises :class:`BadShardError` when the file changed since the job planned it: its rows
    would not be the planned ones.
    """
    fs, path = filesystem(item["url"], storage_options)
    if item["version"] and object_version(fs.info(path)) != item["version"]:
        raise BadShardError(f"{redact_text(item['url'])} changed while the job ran; rerun the job to plan it again")
    with fs.open(path, "rb") as handle:
        # Files written with page checksums get them checked: corruption fails loudly, never
        # turning into wrong text silently.
        table = pq.ParquetFile(handle, page_checksum_verification=True).read_row_groups(item["row_groups"],
                                                                                        columns=columns)
    rows = item["rows"]
    table = without_view_types(table.slice(item["skip"], rows))
    if table.num_rows != rows:
        raise BadShardError(f"{redact_text(item['url'])} has {table.num_rows} rows from row {item['row_start']}, "
                            f"its footer promised {rows}")
    return (table.append_column(UNIT, pa.array(np.full(rows, item["unit"], dtype=np.int32)))
            .append_column(SOURCE, _constant(item["name"], rows))
            .append_column(ROW, pa.array(np.arange(item["row_start"], item["row_start"] + rows, dtype=np.int64)))
            .append_column(OUTPUT, _constant(item["output"], rows))
            .append_column(UNIT_ROWS, pa.array(np.full(rows, rows, dtype=np.int32)))
            .append_column(VERSION, _constant(item["version"], rows)))


def _constant(value: str, rows: int) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(np.zeros(rows, np.int32), [value])


def read_units(batch: pa.Table, *, columns: list[str], storage_options: dict[str, Any], on_bad_shard: str) -> pa.Table:
    """Ray Data fuses this into the first actor pool: the file is read where it is tokenized.

    A unit that can't be read fails the job naming its file, or under ``on_bad_shard="skip"``
    yields no rows (the driver finds it missing and records why).  Storage errors that outlast
    their retries, and denied reads, always fail the job: the file may be fine.
    """
    tables = []
    for item in batch.to_pylist():
        started = time.perf_counter()
        try:
            table = retry(lambda: read_unit(item, columns, storage_options), f"read {item['url']}")
        except Exception as err:  # a corrupt file raises whatever its decoder raises
            if not is_bad_file(err):
                raise
            problem = bad_shard_message(item, err)
            if on_bad_shard != "skip":
                raise BadShardError(f"{problem}. Replace the file, or rerun with --on-bad-shard skip to leave it out "
                                    "(recorded in the manifest).") from err
            logger.warning("%s; skipping its rows (--on-bad-shard skip)", problem)
            continue
        tables.append(table.append_column(SECONDS + "read", seconds_column(time.perf_counter() - started, table.num_rows)))
    return pa.concat_tables(tables) if tables else _no_rows(columns)


def bad_shard_message(item: dict[str, Any], err: BaseException) -> str:
    reason = str(err) if isinstance(err, BadShardError) else f"{type(err).__name__}: {err}"
    return (f"Can't read rows {item['row_start']}-{item['row_start'] + item['rows'] - 1} of input {item['name']} "
            f"({redact_text(item['url'])}): {redact_text(reason)}")


def _no_rows(columns: list[str]) -> pa.Table:
    """An empty block for the later stages, which handle any number of rows."""
    names = [*columns, UNIT, SOURCE, ROW, OUTPUT, UNIT_ROWS, VERSION, SECONDS + "read"]
    types = [pa.string()] * len(columns) + [pa.int32(), pa.dictionary(pa.int32(), pa.string()), pa.int64(),
                                            pa.dictionary(pa.int32(), pa.string()), pa.int32(),
                                            pa.dictionary(pa.int32(), pa.string()), pa.float64()]
    return pa.table([pa.array([], type=t) for t in types], names=names)


# -- sink (CPU tasks) --------------------------------------------------------------------------
def write_units(batch: pa.Table, *, output: str, storage_options: dict[str, Any], job: str, id_column: Optional[str],
                keep_columns: list[str], result_columns: list[str]) -> pa.Table:
    """Write and commit each unit in the batch as its own file; return one stats row per unit."""
    stats = []
    units = batch[UNIT].to_numpy()
    for unit in np.unique(units):
        rows = batch.filter(pa.array(units == unit))
        stats.append(_write_unit(rows, output, storage_options, job, id_column, keep_columns, result_columns))
    return pa.Table.from_pylist(stats)


def _write_unit(rows: pa.Table, output_url: str, storage_options: dict[str, Any], job: str, id_column: Optional[str],
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
    # The user's id column keeps its name, so the output joins back on it.
    columns = {id_column or GENERATED_ID: ids, **{c: rows[c] for c in keep_columns}, **{c: rows[c] for c in result_columns},
               TRUNCATED: rows[TRUNCATED]}
    valid = valid_rows(rows)
    if ERROR in rows.column_names:
        columns[ERROR] = rows[ERROR]
    source = rows[SOURCE][0].as_py()
    errors = ([f"{source} row {r}: {e}" for r, e in zip(row_index.tolist(), rows[ERROR].to_pylist()) if e][:_ERRORS_KEPT]
              if ERROR in rows.column_names else [])
    seconds = {stage: float(pc.sum(rows[SECONDS + stage]).as_py() or 0.0) for stage in STAGES[:-1]}
    stats = {"tokens": int(pc.sum(rows[TOKENS]).as_py() or 0), "padded_tokens": int(pc.sum(rows[PADDED]).as_py() or 0),
             "bad_rows": int((~valid).sum()), "truncated": int(pc.sum(rows[TRUNCATED]).as_py() or 0), "errors": errors,
             "seconds": seconds}
    record = {"job": job, "input": source, "input_version": rows[VERSION][0].as_py(), "row_start": int(row_index[0]),
              "row_stop": int(row_index[0]) + expected, "rows": expected, "stats": stats}
    # The write's own time is in the stats row, not in the record written before it ends.
    output.commit_unit(output_url, storage_options, relative, pa.table(columns), record)
    seconds["write"] = time.perf_counter() - started
    return stats_row(int(rows[UNIT][0].as_py()), relative, expected, stats)


def stats_row(unit: int, relative: str, rows: int, stats: dict[str, Any]) -> dict[str, Any]:
    """One unit's counts as the driver collects them (nested values as JSON: one Arrow row)."""
    return {"unit": unit, "output": relative, "rows": rows, "tokens": stats["tokens"],
            "padded_tokens": stats["padded_tokens"], "bad_rows": stats["bad_rows"], "truncated": stats["truncated"],
            "errors": json.dumps(stats["errors"]), "seconds": json.dumps(stats["seconds"])}


# -- the pipeline ------------------------------------------------------------------------------
def run(spec: JobSpec, plan: Plan, units: list[Unit], job: str, stage_class: type, stage_kwargs: dict[str, Any],
        tokenizer_kwargs: dict[str, Any], result_columns: list[str], resources: Resources
        ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Compute and commit ``units`` (of ``plan``) for the job with fingerprint ``job``.  Returns
    the sink's stats rows, one per unit in unit order (none for units skipped as unreadable),
    and the node each model actor ran on ({actor id: node id}).

    Raises :class:`StallError` when the watchdog finds the pipeline stuck (see jobs.progress).
    """
    context = ray.data.DataContext.get_current()
    # No block splitting: a unit must reach the sink as one block to become one whole file.
    context.target_max_block_size = None
    display = ProgressDisplay(sum(u.row_stop - u.row_start for u in units), len(units))
    # One bar a person can read on a terminal: ours counts rows and tokens; Ray Data's would
    # add one per operator, counting blocks.  Elsewhere Ray Data's periodic log lines stay.
    context.enable_progress_bars = not display.live
    # A user-code error (a bad row) arrives as itself, not as a generic UserCodeException.
    context.raise_original_map_exception = True
    counter = ProgressCounter.remote()
    stage_kwargs = {**stage_kwargs, "progress": ProgressReporter(counter)}
    items = unit_items(plan, units)
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(read_units, batch_size=None, batch_format="pyarrow", num_cpus=resources.task_cpus,
                        fn_kwargs={"columns": plan.columns, "storage_options": spec.storage_options,
                                   "on_bad_shard": spec.on_bad_shard})
    if resources.fused_tokenize:
        # CPU-only: the model actors tokenize their rows (actors.fused).  One unit in flight per
        # actor: its read and tokenizing happen inside the call, so queueing a second unit
        # only keeps it from an idle actor at the end of the job.
        stage = TokenizeAndRun
        kwargs = {"tokenize": tokenizer_kwargs, "stage": stage_class, "stage_kwargs": stage_kwargs}
        in_flight = 1
    else:
        # Tokenizers load once per actor; a separate CPU pool keeps tokenizing off the GPU actors.
        ds = ds.map_batches(
            Tokenize, batch_size=None, batch_format="pyarrow", num_cpus=resources.task_cpus,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=resources.tokenize_actors),
            fn_constructor_kwargs=tokenizer_kwargs,
        )
        # Two blocks in flight per actor keep a GPU fed without hoarding the tail.
        stage, kwargs, in_flight = stage_class, stage_kwargs, 2
    # Each CPU actor holds its own weight copy: asking Ray for that memory keeps it from packing
    # more copies onto a node than fit.
    memory = {"memory": resources.memory} if resources.memory else {}
    ds = ds.map_batches(
        stage, batch_size=None, batch_format="pyarrow", num_gpus=resources.num_gpus, num_cpus=resources.num_cpus,
        # The whole input is known up front: start every actor at once rather than scaling up step by step.
        compute=ray.data.ActorPoolStrategy(min_size=resources.min_actors, max_size=resources.max_actors,
                                           initial_size=resources.max_actors, max_tasks_in_flight_per_actor=in_flight),
        fn_constructor_kwargs=kwargs, **memory, **MODEL_ACTOR_FAULTS,
    )
    ds = ds.map_batches(
        write_units, batch_size=None, batch_format="pyarrow", num_cpus=resources.task_cpus, max_retries=WRITE_TASK_RETRIES,
        fn_kwargs={"output": spec.output, "storage_options": spec.storage_options, "job": job, "id_column": spec.id_column,
                   "keep_columns": spec.keep_columns, "result_columns": result_columns},
    )
    before = set(threading.enumerate())
    watchdog = Watchdog(counter, timeout=spec.stall_timeout, total_rows=sum(u.row_stop - u.row_start for u in units),
                        resources=resources, stop=lambda error: _stop_executors(before, error), total_files=len(units),
                        display=display)
    watchdog.start()
    stats: list[dict[str, Any]] = []
    try:
        folded = 0
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            stats.extend(batch.to_pylist())
            watchdog.units_done(batch.num_rows)
            if len(stats) - folded >= records.FOLD_EVERY:
                folded = len(stats)
                _fold(spec)
    finally:
        actor_nodes = watchdog.finish()
        ray.kill(counter)
    if watchdog.stalled:
        raise StallError(watchdog.stalled)
    return sorted(stats, key=lambda s: s["unit"]), actor_nodes


def _fold(spec: JobSpec) -> None:
    """Fold the commit records so far (bookkeeping: when it fails, the JSON records stand and
    the run goes on)."""
    try:
        output.fold_records(spec.output, spec.storage_options)
    except Exception as err:  # storage errors come in many types
        logger.warning("could not fold the commit records into %s yet (%s); they stay as they are",
                       records.FILES, redact_text(str(err)))


def _stop_executors(before: set[threading.Thread], error: BaseException) -> None:
    """Shut down the Ray Data executions started since ``before`` (the executor is a thread of
    the driver, and has no public handle before its first output): their actors and tasks are
    cancelled and the consuming loop ends."""
    from ray.data._internal.execution.streaming_executor import StreamingExecutor

    for thread in threading.enumerate():
        if isinstance(thread, StreamingExecutor) and thread not in before:
            thread.shutdown(force=True, exception=error)
