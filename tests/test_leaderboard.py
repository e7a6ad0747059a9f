"""The leaderboard's rows: one pure function over the one ranking, no database."""

from __future__ import annotations

from sweep.report.leaderboard import TrialEntry, leaderboard_rows


def _entry(number: int, value: float | None, *, reused: int | None = None) -> TrialEntry:
    return TrialEntry(number=number, value=value, label=f"t{number}",
                      config={"kernel": {"kind": "l2", "l2": 0.001}, "bias": {"kind": "none"},
                              "activity": {"kind": "none"}},
                      config_hash=f"h{number}", phase="search", epochs_run=3, duration_s=12.5, dedup_of=reused)


def test_rows_are_ranked_best_first_ties_to_the_earlier_trial_and_cut_at_top() -> None:
    entries = [_entry(4, 0.8), _entry(1, 0.9), _entry(2, None), _entry(0, 0.8), _entry(7, 0.5, reused=1)]
    rows = leaderboard_rows(entries, top=3)
    assert [(r.rank, r.number, r.value) for r in rows] == [(1, 1, 0.9), (2, 0, 0.8), (3, 4, 0.8)]
    assert [r.number for r in leaderboard_rows(entries, top=10)] == [1, 0, 4, 7]
    assert leaderboard_rows(entries, top=10)[-1].reused == 1


def test_row_cells_and_json_keys() -> None:
    (row,) = leaderboard_rows([_entry(3, 0.75)], top=1)
    assert list(row.penalties) == ["kernel", "bias", "activity"]
    assert row.penalties == {"kernel": "L2 1.0e-03", "bias": "none", "activity": "none"}
    assert row.as_json() == {
        "number": 3, "value": 0.75, "label": "t3", "penalties": row.penalties, "epochs": 3,
        "duration_s": 12.5, "config_hash": "h3", "phase": "search", "reused": None,
    }


def test_no_entries_no_rows() -> None:
    assert leaderboard_rows([], top=5) == []
