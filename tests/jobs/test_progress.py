"""What a person watching a job sees (jobs.progress), without Ray: rows and tokens done, the
recent rate and the time left, as log lines off a terminal and a live bar on one."""
from __future__ import annotations

import io
import logging
import sys
import time
from typing import Any, Optional

import pytest

from jobs import progress
from jobs.placement import Resources
from jobs.progress import ProgressDisplay, Watchdog, format_duration


def test_the_line_counts_rows_and_tokens_with_the_recent_rate_and_the_time_left() -> None:
    display = ProgressDisplay(total_rows=10_000, total_files=25, live=False)
    start = display._began
    # A slow start (actors loading): 100 rows in the first minute; then 200 rows/s, and the rate
    # says so, not the average since the start.
    display.line(start + 60, 100, 2_500, 0)
    line = display.line(start + 90, 6_100, 152_500, 6)
    assert line == ("6,100 of 10,000 rows (61%), 152,500 tokens, 6 of 25 file(s) committed, 200.0 rows/s, "
                    "5,000 tokens/s, about 20 s left")
    # Readings older than the rate window stop counting: 3,000 rows over the last 90 s.
    later = display.line(start + 90 + progress.RATE_WINDOW_SECONDS + 30, 9_100, 227_500, 20)
    assert ", 33.3 rows/s, 833 tokens/s, about 27 s left" in later
    done = display.line(start + 400, 10_000, 250_000, 25)
    assert "10,000 of 10,000 rows (100%)" in done and "left" not in done


@pytest.mark.parametrize("seconds, text", [(0.4, "0 s"), (42, "42 s"), (425, "7 min 5 s"), (11_520, "3 h 12 min")])
def test_durations_read_at_a_person_s_precision(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_off_a_terminal_progress_is_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    display = ProgressDisplay(total_rows=50, total_files=2, live=False)
    with caplog.at_level(logging.INFO, logger="jobs.progress"):
        display.show(display._began + 5, 20, 400, 1)
    assert caplog.messages == ["progress: 20 of 50 rows (40%), 400 tokens, 1 of 2 file(s) committed, 4.0 rows/s, "
                               "80 tokens/s, about 8 s left"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_live_bar_counts_rows(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    display = ProgressDisplay(total_rows=100, total_files=4)
    assert display.live
    with caplog.at_level(logging.INFO, logger="jobs.progress"):
        display.show(display._began + 2, 40, 1_000, 1)
        display.show(display._began + 4, 100, 2_500, 4)
        display.close()
    drawn = terminal.getvalue()
    assert "rows through the model" in drawn and "100/100" in drawn and "2,500 tokens" in drawn and "4/4 files" in drawn
    assert "\r" in drawn and not caplog.messages  # redrawn in place, no log lines


class _ScriptedWatchdog(Watchdog):
    """The watchdog's loop over scripted counter readings instead of a Ray actor's."""

    def __init__(self, readings: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(counter=None, **kwargs)
        self.readings = readings

    def _read(self) -> Optional[dict[str, Any]]:
        snapshot = self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]
        self.actors = snapshot["actors"]
        return snapshot


def test_the_watchdog_logs_progress_every_few_seconds(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(progress, "PROGRESS_LOG_SECONDS", 0.1)
    readings = [{"rows": rows, "tokens": 10 * rows, "actors": {"a": "node"}} for rows in (0, 10, 20, 30, 40, 50)]
    resources = Resources(num_gpus=0, num_cpus=1, threads=1, min_actors=1, max_actors=1, task_cpus=0.25,
                          tokenize_actors=1)
    watchdog = _ScriptedWatchdog(readings, timeout=60, total_rows=50, resources=resources, stop=lambda err: None,
                                 poll=0.05, total_files=5, display=ProgressDisplay(50, 5, live=False))
    with caplog.at_level(logging.INFO, logger="jobs.progress"):
        watchdog.start()
        time.sleep(0.6)
        watchdog.units_done(5)
        assert watchdog.finish() == {"a": "node"}
    lines = [m for m in caplog.messages if m.startswith("progress: ")]
    assert len(lines) >= 3, caplog.messages
    assert lines[-1].startswith("progress: 50 of 50 rows (100%), 500 tokens, 5 of 5 file(s) committed")
