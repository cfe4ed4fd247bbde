"""Progress lines: what `dvc repro` and CI logs show of a long stage (step/total, numbers, rate, ETA)."""

from __future__ import annotations

import logging

import pytest

from diffx.progress import Progress, format_duration


def test_a_line_at_the_first_update_then_at_the_rhythm_then_the_closing_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="diffx.progress")
    progress = Progress("train unet", 10, unit="steps", scale=16, rate_unit="samples", interval=3600)
    for _ in range(10):
        progress.update(1, loss=0.25)
    progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # the first step, then (an hour's rhythm) only the closing line
    assert lines[0].startswith("train unet: 1/10 steps (10%) | loss 0.25 | ") and "samples/s" in lines[0]
    assert "ETA" in lines[0] and lines[-1].startswith("train unet: 10/10 steps (100%)")
    assert lines[-1].endswith("ETA 0m00s")


def test_every_update_logs_at_a_zero_interval_and_skipped_work_leaves_the_total(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIFFX_PROGRESS_SECONDS", "0")
    caplog.set_level(logging.INFO, logger="diffx.progress")
    with Progress("generate (rank 0/1)", 48, unit="samples") as progress:
        progress.skip(16)  # a complete shard found on resume: not work of this run
        progress.update(16, shard=1)
        progress.update(16, shard=2)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" | ")[0] for line in lines] == [
        "generate (rank 0/1): 16/32 samples (50%)",
        "generate (rank 0/1): 32/32 samples (100%)",
    ]
    assert "shard 2" in lines[-1]


def test_an_unknown_total_counts_without_an_eta(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="diffx.progress")
    with Progress("ingest", None, unit="samples") as progress:
        progress.update(5)
    assert caplog.records[0].getMessage().startswith("ingest: 5 samples | ")
    assert "ETA" not in caplog.records[0].getMessage()


def test_durations_read_as_minutes_and_hours() -> None:
    assert format_duration(59.6) == "1m00s"
    assert format_duration(3725) == "1h02m05s"
    assert format_duration(-3) == "0m00s"
