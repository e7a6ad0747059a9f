"""A duplicate config with the same seed reuses the result without taking a budget slot, so a
continued study's budget buys configs that did not run yet. Real workers, real Postgres."""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sweep.storage.engine import engine_of, open_storage
from sweep.study.budget import budget_state, counts_toward_budget
from tests.helpers import BIN, REPO, run_cli, worker_env, write_spec

# Three distinct configs only: none, L1(1e-3), L2(1e-3).
SPEC = """
[study]
name = "{name}"

[space.kernel]
kinds = ["none", "l1", "l2"]
l1 = {{ values = [1e-3] }}
l2 = {{ values = [1e-3] }}

[training]
trainer = "workers.synthetic:train"
epochs = 2

[sampler]
name = "random"
seed = 0

[budget]
trials = 5
"""


def _worker(pg_url: str, study: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = worker_env(pg_url, study)
    return subprocess.run([str(BIN / "sweep-worker"), *args], env=env, capture_output=True, text=True,
                          timeout=180, cwd=REPO)


def test_duplicates_take_no_budget_slot_in_a_continued_study(pg_url: str, study_name: str, tmp_path: Path) -> None:
    run_cli(
        "create", str(write_spec(tmp_path / "s.toml", SPEC.format(name=study_name))), "--storage", pg_url, check=True
    )
    first = _worker(pg_url, study_name, "--max-trials", "2")  # a first session, then the study is continued
    assert first.returncode == 0, first.stderr[-3000:]
    second = _worker(pg_url, study_name)
    assert second.returncode == 0, second.stderr[-3000:]

    trials = optuna.load_study(study_name=study_name, storage=pg_url).get_trials()
    trained = [t for t in trials if t.user_attrs.get("dedup_of") is None]
    hashes = [t.user_attrs["config_hash"] for t in trained]
    assert len(hashes) == len(set(hashes)) == 3, [(t.number, t.user_attrs.get("config"), t.user_attrs.get("dedup_of"))
                                                  for t in trials]
    reused = [t for t in trials if t.user_attrs.get("dedup_of") is not None]
    assert reused and all(t.state == TrialState.COMPLETE and t.value is not None for t in reused)
    # Duplicates took no slot until the space was plainly exhausted (20 in a row); then the last
    # 2 slots went to duplicates so the study could finish.
    uncounted = [t for t in reused if not counts_toward_budget(t.state, t.user_attrs)]
    assert len(uncounted) >= 20 and sum(counts_toward_budget(t.state, t.user_attrs) for t in reused) == 2
    assert "search space looks exhausted" in second.stderr
    state = budget_state(engine_of(open_storage(pg_url)), study_name)
    assert state is not None and (state.claimed, state.settled, state.total) == (5, 5, 5), state
    print(
        f"\n[dedup] {len(trials)} trials: {len(trained)} distinct configs trained, {len(uncounted)} reused duplicates "
        f"took no slot, {len(reused) - len(uncounted)} counted after the space was exhausted; claimed "
        f"{state.claimed} = settled {state.settled} of {state.total}"
    )
