"""A running job's progress, and the watchdog that ends a stalled one instead of hanging.

The model actors report after every micro-batch (rows and tokens through the model) to a
small counter actor that takes no CPU, so it always runs.  The driver's watchdog reads it
every few seconds, logs progress, and when neither a row nor a committed file has moved for
``--stall-timeout`` while work waits for resources Ray can't give (or no node has CPU free
for the read and write tasks), it shuts the pipeline down and the job fails with a message
that names what waits, for what, and what to change.  No progress with nothing waiting (a
slow model download, a long forward, nodes the autoscaler is still starting) is only logged.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional

import ray

from jobs.placement import TASK_CPUS, Resources

logger = logging.getLogger(__name__)

# A progress line this often when the console is no terminal (a log file, a cluster's job log).
PROGRESS_LOG_SECONDS = 10.0
# The rate (and so the ETA) is measured over this much recent time: the actors' start-up, or
# a slow first batch, stop counting once the job runs steadily.
RATE_WINDOW_SECONDS = 60.0


@ray.remote(num_cpus=0, max_restarts=-1)
class ProgressCounter:
    """Rows and tokens through the model so far, and which node each model actor runs on."""

    def __init__(self) -> None:
        self.rows = 0
        self.tokens = 0
        self.actors: dict[str, str] = {}

    def add(self, rows: int, tokens: int, actor: str, node: str) -> None:
        self.rows += rows
        self.tokens += tokens
        # Keyed by actor and node: an actor restarted on another node (its node was lost) counts
        # on both, so the manifest's actors per node says where actors ran, not only where they ended.
        self.actors[f"{actor}@{node}"] = node

    def snapshot(self) -> dict[str, Any]:
        return {"rows": self.rows, "tokens": self.tokens, "actors": dict(self.actors)}


class ProgressReporter:
    """What a model stage calls after each micro-batch, ``report(rows, tokens)``: picklable,
    so it travels to the actors in their constructor arguments; fire and forget."""

    def __init__(self, counter: Any) -> None:
        self.counter = counter
        self._where: Optional[tuple[str, str]] = None

    def __call__(self, rows: int, tokens: int) -> None:
        if self._where is None:
            context = ray.get_runtime_context()
            self._where = (context.get_actor_id() or "driver", context.get_node_id())
        self.counter.add.remote(rows, tokens, *self._where)


class StallError(RuntimeError):
    """The pipeline made no progress for --stall-timeout while work waited for resources."""


class Watchdog(threading.Thread):
    """Watches ``counter`` and the units the driver sees committed (``units_done``); on a stall
    sets ``stalled`` to the message and calls ``stop`` with the error (which ends the pipeline)."""

    def __init__(self, counter: Any, *, timeout: float, total_rows: int, resources: Resources,
                 stop: Callable[[BaseException], None], poll: Optional[float] = None, total_files: int = 0,
                 display: Optional["ProgressDisplay"] = None) -> None:
        super().__init__(daemon=True, name="autoinfer-watchdog")
        self.counter = counter
        self.timeout = timeout
        self.total_rows = total_rows
        self.resources = resources
        self.stop_pipeline = stop
        self.display = display or ProgressDisplay(total_rows, total_files)
        # A live bar moves every second; log lines come every PROGRESS_LOG_SECONDS anyway.
        self.poll = poll or min(1.0 if self.display.live else 5.0, max(0.2, timeout / 5))
        self.stalled: Optional[str] = None
        self.actors: dict[str, str] = {}
        self._done = threading.Event()
        self._moved = time.monotonic()
        self._began = self._moved
        self._rows = -1
        self._units = 0

    def units_done(self, count: int) -> None:
        """The driver saw ``count`` more units committed."""
        self._units += count
        self._moved = time.monotonic()

    def finish(self) -> dict[str, str]:
        """Stop watching; the model actors' nodes as last reported ({actor id: node id})."""
        self._done.set()
        self.join(timeout=10)
        snapshot = self._read()
        if snapshot:
            self.display.show(time.monotonic(), snapshot["rows"], snapshot["tokens"], self._units)
        self.display.close()
        return self.actors

    def _read(self) -> Optional[dict[str, Any]]:
        try:
            snapshot = ray.get(self.counter.snapshot.remote(), timeout=10)
        except Exception as err:  # the counter is bookkeeping: losing it must not fail the job
            logger.debug("progress counter unreadable: %s", err)
            return None
        self.actors = snapshot["actors"]
        return snapshot

    def run(self) -> None:
        logged = time.monotonic()
        while not self._done.wait(self.poll):
            snapshot = self._read()
            now = time.monotonic()
            if snapshot and snapshot["rows"] != self._rows:
                self._rows = snapshot["rows"]
                self._moved = now
            if snapshot and (self.display.live or now - logged >= PROGRESS_LOG_SECONDS):
                logged = now
                self._log_progress(snapshot, now)
            idle = now - self._moved
            if idle < self.timeout:
                continue
            waiting = waiting_for_resources(self.resources)
            if waiting is None:
                logger.warning("no progress for %.0f s, but nothing waits for resources (model actors still starting, "
                               "a long forward, or nodes on their way); still waiting", idle)
                self._moved = now  # warn once per timeout, not every poll
                continue
            self.stalled = stall_message(idle, waiting, self.resources)
            logger.info("stalled: stopping the pipeline")
            self.stop_pipeline(StallError(self.stalled))
            return

    def _log_progress(self, snapshot: dict[str, Any], now: float) -> None:
        self.display.show(now, snapshot["rows"], snapshot["tokens"], self._units)


class ProgressDisplay:
    """What a person watching the job sees: rows and tokens through the model, files committed,
    the recent rate and the time left.  Counts are rows (the model actors report them after
    every micro-batch), never Ray Data's blocks.

    On a terminal a live bar (tqdm) redraws in place; anywhere else (a log file, a cluster's
    job log) a log line every :data:`PROGRESS_LOG_SECONDS`, which the watchdog paces."""

    def __init__(self, total_rows: int, total_files: int = 0, live: Optional[bool] = None) -> None:
        self.total_rows = total_rows
        self.total_files = total_files
        self.live = _stderr_is_terminal() if live is None else live
        self._history: list[tuple[float, int, int]] = []  # (time, rows, tokens) within the rate window
        self._began = time.monotonic()
        self._bar: Any = None
        if self.live:
            try:
                from tqdm import tqdm
            except ImportError:  # no bar without tqdm: log lines instead
                self.live = False
            else:
                import shutil

                # A terminal that reports no size (a pty nobody sized) would hide the bar: tqdm
                # draws none wider than 0 columns nor below row 0.
                sized = shutil.get_terminal_size((0, 0)).columns >= 40
                self._bar = tqdm(total=total_rows, unit="row", unit_scale=True, dynamic_ncols=sized,
                                 ncols=None if sized else 100, nrows=None if sized else 20,
                                 desc="rows through the model", smoothing=0.1)

    def rates(self, now: float, rows: int, tokens: int) -> tuple[float, float]:
        """(rows/s, tokens/s) over the last :data:`RATE_WINDOW_SECONDS` (since the start at first)."""
        self._history.append((now, rows, tokens))
        while len(self._history) > 2 and now - self._history[1][0] >= RATE_WINDOW_SECONDS:
            self._history.pop(0)
        then, rows_then, tokens_then = self._history[0] if len(self._history) > 1 else (self._began, 0, 0)
        span = now - then
        return ((rows - rows_then) / span, (tokens - tokens_then) / span) if span > 0 else (0.0, 0.0)

    def line(self, now: float, rows: int, tokens: int, files: int) -> str:
        """The progress line: ``1,200 of 10,000 rows (12%), 30,000 tokens, 3 of 25 file(s) committed,
        240 rows/s, 6,000 tokens/s, about 37 s left``."""
        row_rate, token_rate = self.rates(now, rows, tokens)
        share = 100 * rows / self.total_rows if self.total_rows else 100.0
        left = max(0, self.total_rows - rows)
        eta = f", about {format_duration(left / row_rate)} left" if row_rate > 0 and left else ""
        of_files = f" of {self.total_files:,}" if self.total_files else ""
        return (f"{rows:,} of {self.total_rows:,} rows ({share:.0f}%), {tokens:,} tokens, {files:,}{of_files} "
                f"file(s) committed, {row_rate:,.1f} rows/s, {token_rate:,.0f} tokens/s{eta}")

    def show(self, now: float, rows: int, tokens: int, files: int) -> None:
        if self._bar is None:
            logger.info("progress: %s", self.line(now, rows, tokens, files))
            return
        row_rate, token_rate = self.rates(now, rows, tokens)
        self._bar.update(max(0, rows - self._bar.n))
        self._bar.set_postfix_str(f"{tokens:,} tokens, {token_rate:,.0f} tok/s, {files:,}"
                                  f"{f'/{self.total_files:,}' if self.total_files else ''} files", refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def format_duration(seconds: float) -> str:
    """``42 s``, ``7 min 5 s``, ``3 h 12 min``: a person reads an ETA at this precision."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _stderr_is_terminal() -> bool:
    import sys

    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def waiting_for_resources(resources: Resources) -> Optional[str]:
    """What waits for resources Ray can't give, or None when nothing does (or nodes are on
    their way).  Work waits when Ray holds tasks or actors no node has room for, or when no
    node has the CPU a read or write task needs (Ray Data then holds its tasks back itself)."""
    found: list[str] = []
    status = _cluster_status()
    if status is not None:
        if status.pending_launches or status.pending_nodes:
            return None
        for demand in status.resource_demands.ray_task_actor_demand:
            for request in demand.bundles_by_count:
                shape = ", ".join(f"{v:g} {k}" for k, v in sorted(request.bundle.items()) if not k.startswith("node:"))
                found.append(f"{request.count} task(s)/actor(s) asking for {{{shape}}}")
    free = free_cpus_per_node()
    if free and all(cpus < TASK_CPUS for cpus in free.values()):
        found.append(f"the read/write tasks ({TASK_CPUS:g} CPU each): no node has that much CPU free "
                     f"({', '.join(f'node {n}: {c:g} CPU free' for n, c in sorted(free.items()))})")
    return "; ".join(found) or None


def stall_message(idle: float, waiting: str, resources: Resources) -> str:
    return (f"The job made no progress for {idle:.0f} s (no row through the model, no file committed) while work "
            f"waits for resources: {waiting}. The plan: {resources.max_actors} model actor(s) of {resources.num_cpus:g} "
            f"CPU and {resources.num_gpus:g} GPU each. Fix it with fewer actors (--actors), a smaller --cpus-per-actor, "
            "or bigger nodes; if the model takes longer to start, raise --stall-timeout. Files committed so far are "
            "kept: rerun the same command to resume.")


def free_cpus_per_node() -> dict[str, float]:
    try:
        from ray._private.state import available_resources_per_node

        return {node[:12]: float(res.get("CPU", 0.0)) for node, res in available_resources_per_node().items()}
    except Exception as err:  # internal API: no reading is no evidence
        logger.debug("can't read free resources per node: %s", err)
        return {}


def _cluster_status() -> Any:
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        return get_cluster_status(ray.get_runtime_context().gcs_address)
    except Exception as err:  # internal API: no reading is no evidence
        logger.debug("can't read the cluster status: %s", err)
        return None
