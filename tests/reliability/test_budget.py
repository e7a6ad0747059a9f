"""Exact budget under racing workers (optuna#3518): 8 real workers, budget 40, exactly 40 trials.

For comparison the second test runs 8 bare Optuna processes stopped by ``MaxTrialsCallback``,
which counts finished trials after the fact; its overshoot is printed, not asserted.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sweep.storage.engine import engine_of, open_storage
from sweep.study.budget import budget_state
from tests.helpers import worker_env
from tests.reliability.support import (
    FINISHED,
    by_state,
    create_synthetic,
    start_worker,
    tails,
    trials_of,
    wait_workers,
    worker_group,
)

BUDGET = 40
WORKERS = 8


def test_racing_workers_finish_exactly_the_budget(pg_url: str, study_name: str, tmp_path: Path) -> None:
    """8 workers race for 40 slots of a 2-epoch synthetic sweep; all exit 0 and exactly 40 trials finish."""
    create_synthetic(pg_url, tmp_path, study_name, trials=BUDGET, epochs=2, pruner="median", dedup=False)
    started = time.monotonic()
    with worker_group() as workers:
        workers += [start_worker(pg_url, study_name, tmp_path / "logs", i) for i in range(WORKERS)]
        ran = wait_workers(workers, timeout=240)
        codes = [w.proc.returncode for w in workers]
        assert codes == [0] * WORKERS, f"exit codes {codes}\n{tails(workers)}"
    wall = time.monotonic() - started

    trials = trials_of(pg_url, study_name)
    numbers = [t.number for t in trials]
    finished = [t for t in trials if t.state in FINISHED]
    assert len(numbers) == len(set(numbers)), f"duplicate trial numbers: {sorted(numbers)}"
    assert len(finished) == BUDGET, f"{len(finished)} finished trials for a budget of {BUDGET}: {by_state(trials)}"
    assert len(trials) == BUDGET, f"extra trials beyond the budget: {by_state(trials)}"
    state = budget_state(engine_of(open_storage(pg_url)), study_name)
    assert state is not None and (state.claimed, state.settled) == (BUDGET, BUDGET), state
    per_worker = Counter(t.user_attrs["worker"]["pid"] for t in finished)
    print(
        f"\n[budget] {len(finished)}/{BUDGET} finished ({by_state(trials)}), {WORKERS} workers, wall {wall:.1f}s, "
        f"worker run times {sorted(round(s, 1) for s in ran.values())}, trials per worker {sorted(per_worker.values())}"
    )


_BARE_WORKER = textwrap.dedent("""
    import sys, time, optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=sys.argv[2], storage=sys.argv[1])
    def objective(trial):
        time.sleep(0.05)  # a short trial, so that the workers overlap at the end
        return trial.suggest_float("x", 0, 1)
    study.optimize(objective, callbacks=[MaxTrialsCallback(int(sys.argv[3]), states=(TrialState.COMPLETE,))])
""")


def test_optuna_max_trials_callback_for_comparison(pg_url: str, study_name: str) -> None:
    """Baseline, printed for docs/reliability.md: bare Optuna with MaxTrialsCallback(40) and 8 processes.

    It can only overshoot (never stop early); how far depends on how the processes overlap.
    """
    optuna.create_study(study_name=study_name, storage=pg_url, direction="maximize")
    env = worker_env()
    procs = [subprocess.Popen([sys.executable, "-c", _BARE_WORKER, pg_url, study_name, str(BUDGET)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(WORKERS)]
    errors = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * WORKERS, "\n".join(errors)
    trials = trials_of(pg_url, study_name)
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    assert complete >= BUDGET
    print(f"\n[budget] bare Optuna MaxTrialsCallback({BUDGET}) with {WORKERS} processes: {complete} complete "
          f"(overshoot {complete - BUDGET}); regsweep's claimed slots: exactly {BUDGET}")
