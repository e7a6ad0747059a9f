"""The ETA of ``sweep status``: a pure function of what status read, tested without a database."""

from __future__ import annotations

import pytest

from sweep.report.summary import eta_seconds
from sweep.study.sweeps import UNLIMITED


def test_trials_left_at_the_median_over_the_running_workers() -> None:
    assert eta_seconds(10, 4, 30.0, 2) == pytest.approx(6 * 30.0 / 2)
    assert eta_seconds(10, 4, 30.0, 0) == pytest.approx(6 * 30.0)  # nothing running: one worker assumed


def test_a_spent_budget_has_nothing_left() -> None:
    assert eta_seconds(5, 5, 30.0, 1) == 0.0
    assert eta_seconds(5, 7, 30.0, 1) == 0.0  # counted past the total (budget lowered): never negative


@pytest.mark.parametrize(("total", "median"), [(None, 30.0), (UNLIMITED, 30.0), (10, None)])
def test_no_eta_without_a_budget_to_count_down_or_a_duration(total: int | None, median: float | None) -> None:
    assert eta_seconds(total, 3, median, 2) is None
