"""A hard deadline with real workers on real Postgres: no trial is started that cannot finish,
none is cut off, none is left RUNNING, and the workers exit 0 when the window closes."""

from __future__ import annotations

import datetime as dt
import statistics
import subprocess
import threading
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sweep.schedule.night import NightCloser
from sweep.storage.engine import StorageConfig, open_storage
from tests.helpers import BIN, REPO, run_cli, synthetic_spec, worker_env

WINDOW_S = 30.0


def test_deadline_stops_sweep_without_cutting_trials(pg_url: str, study_name: str, tmp_path: Path) -> None:
    deadline = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=WINDOW_S)).replace(microsecond=0)
    # No trial budget: only the deadline ends this sweep. A trial takes 3 x 1 s plus overhead.
    spec = synthetic_spec(tmp_path, study_name, epochs=3, epoch_seconds=1.0,
                          changes={"budget": {"trials": None, "deadline": deadline.isoformat()}})
    run_cli("create", str(spec), "--storage", pg_url, check=True)
    env = worker_env(pg_url, study_name)
    workers = [subprocess.Popen([str(BIN / "sweep-worker"), "--worker-index", str(i)], env=env, cwd=REPO, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    outputs = [w.communicate(timeout=WINDOW_S + 90)[0] for w in workers]
    exited = time.time()
    assert [w.returncode for w in workers] == [0, 0], "\n".join(o[-3000:] for o in outputs)

    trials = optuna.load_study(study_name=study_name, storage=pg_url).get_trials()
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    cut = {t.number: t.user_attrs.get("fail_reason") for t in trials
           if str(t.user_attrs.get("fail_reason", "")).startswith("deadline")}
    assert not cut, f"trials started that could not finish before the deadline: {cut}"
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) >= 8  # two workers kept busy for most of the window
    local_deadline = deadline.astimezone().replace(tzinfo=None)  # Optuna stores naive local times
    late = {t.number: str(t.datetime_complete) for t in finished if t.datetime_complete > local_deadline}
    assert not late, f"finished after the deadline {local_deadline}: {late}"
    # The window was used: the last trial ended within two trial durations of the deadline,
    # and the workers left soon after it (no idle wait for the heartbeat grace period).
    trained = [t for t in finished if "dedup_of" not in t.user_attrs]  # a reused result takes 0 s
    typical = statistics.median(float(t.user_attrs["duration_s"]) for t in trained)
    last_end = max(t.datetime_complete for t in finished)
    assert (local_deadline - last_end).total_seconds() < 2 * typical + 1.5
    assert exited < deadline.timestamp() + 10


def test_close_leaves_no_trial_running(pg_url: str, study_name: str, tmp_path: Path) -> None:
    """At the close: a stale trial (worker died), one that never beat and one whose worker still beats
    past the drain time are all failed with a ``deadline: ...`` reason, and the report is written."""
    run_cli("create", str(synthetic_spec(tmp_path, study_name, trials=5)), "--storage", pg_url, check=True)
    storage = open_storage(pg_url, StorageConfig(heartbeat_interval=1, grace_period=2))
    study = optuna.load_study(study_name=study_name, storage=storage)
    stale = study.ask()
    # A trial with no heartbeat row: asked by a process without heartbeats (a worker's own asks
    # write the first beat in the same transaction).
    silent = optuna.load_study(study_name=study_name, storage=open_storage(pg_url)).ask()
    live = study.ask()
    storage.record_heartbeat(stale._trial_id)
    done = study.ask()
    study.tell(done, 0.5)
    time.sleep(2.5)  # the stale trial's last beat is now older than the grace period
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            storage.record_heartbeat(live._trial_id)
            stop.wait(0.3)

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        closer = NightCloser(
            pg_url, tmp_path / "reports", heartbeat_interval=1, grace_period=2, poll_s=0.3, drain_s=1.5
        )
        failed = closer.close(study_name)
    finally:
        stop.set()
        beater.join()
    trials = {t.number: t for t in optuna.load_study(study_name=study_name, storage=pg_url).get_trials()}
    assert sorted(failed) == sorted([stale.number, silent.number, live.number])
    reasons = {n: trials[n].user_attrs.get("fail_reason", "") for n in failed}
    assert all(trials[n].state == TrialState.FAIL for n in failed)
    assert reasons[stale.number].startswith("deadline: no heartbeat for ")
    assert reasons[silent.number] == "deadline: still RUNNING at the close of the night and never wrote a heartbeat"
    assert reasons[live.number] == "deadline: still running 2s after the close of the night"
    assert trials[done.number].state == TrialState.COMPLETE and "fail_reason" not in trials[done.number].user_attrs
    assert (tmp_path / "reports" / f"{study_name}.html").exists() and (
        tmp_path / "reports" / f"{study_name}.md"
    ).exists()


def test_prediction_is_pessimistic_and_falls_back_to_previous_nights(pg_url: str, study_name: str) -> None:
    """The estimate covers slow trials (max of 1.25 x median and p90), and a night with no finished
    trial yet borrows the evidence of the previous night's study of the same sweep."""
    from workers.parent.prediction import estimate, predict_duration

    assert estimate([10.0] * 9 + [30.0]) == 30.0  # the p90 trial
    assert estimate([10.0, 10.0, 11.0]) == 12.5   # 1.25 x median
    yesterday = optuna.create_study(study_name=f"{study_name}-2026-11-22", storage=pg_url)
    for seconds in (20.0, 22.0, 24.0):
        yesterday.add_trial(optuna.trial.create_trial(
            value=0.9, user_attrs={"duration_s": seconds, "epochs_run": 3, "worker": {"gpu": "NVIDIA H100"}}))
    tonight = optuna.create_study(study_name=f"{study_name}-2026-11-23", storage=pg_url)
    assert predict_duration(tonight, "NVIDIA H100", 3) == 27.5
    assert (
        predict_duration(optuna.create_study(study_name=f"{study_name}-other", storage=pg_url), "NVIDIA H100", 3) == 0.0
    )


def test_a_workers_evidence_counts_each_finished_trial_once(pg_url: str, study_name: str) -> None:
    """The worker keeps one DurationEvidence across its trials: fed the study again after each trial,
    it adds only the trials finished since, and predicts what counting afresh predicts."""
    from workers.parent.prediction import DurationEvidence, predict_duration

    study = optuna.create_study(study_name=study_name, storage=pg_url)

    def finish(seconds: float, epochs: int = 3) -> None:
        study.add_trial(optuna.trial.create_trial(
            value=0.9, user_attrs={"duration_s": seconds, "epochs_run": epochs, "worker": {"gpu": "NVIDIA H100"}}))

    kept = DurationEvidence("NVIDIA H100", 3)
    running = study.ask()  # not evidence until it finishes
    finish(10.0)
    assert predict_duration(study, "NVIDIA H100", 3, evidence=kept) == 12.5
    finish(2.0, epochs=1)  # a partial run: its per-epoch time is only a fallback
    for seconds in (10.0, 30.0):
        finish(seconds)
    study.tell(running, 0.5)  # finished with no duration: counted as seen, adds nothing
    assert predict_duration(study, "NVIDIA H100", 3, evidence=kept) == predict_duration(study, "NVIDIA H100", 3) == 30.0
    assert len(kept._seen) == 5 and sorted(kept._same) == [10.0, 10.0, 30.0]
    assert predict_duration(study, "NVIDIA H100", 3, evidence=kept) == 30.0  # again: nothing counted twice
    assert sorted(kept._same) == [10.0, 10.0, 30.0]
