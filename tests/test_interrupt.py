"""Ctrl-C, for real: `sweep run` and `sweep-worker` in their own process group, SIGINT sent to the
whole group as a terminal does, once and twice. Synthetic trainer on real Postgres.

Each interrupted trial must be re-queued (a WAITING copy), its budget slot given back
(``claimed == settled`` == trials that count), no trial may fail with a worker error, and the
process exits 130 with a one-line "interrupted" summary.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep.storage.engine import engine_of, open_storage
from sweep.study.budget import budget_state, counts_toward_budget
from tests.helpers import BIN, run_cli, synthetic_spec, worker_env


def _start(args: list[str], pg_url: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    full_env = worker_env(pg_url, PYTHONUNBUFFERED="1", **(env or {}))
    with open(log, "wb") as handle:
        # Its own process group, like a shell job: killpg then reaches it as a terminal's Ctrl-C would.
        return subprocess.Popen(args, env=full_env, stdout=handle, stderr=subprocess.STDOUT, cwd=log.parent,
                                start_new_session=True)


def _trials(pg_url: str, name: str) -> list[FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=pg_url).get_trials(deepcopy=False)
    except KeyError:  # `sweep run` has not created the study yet
        return []


def _wait_running(pg_url: str, name: str, n: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until ``n`` trials are RUNNING with at least one epoch reported (mid-trial)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        busy = [t for t in _trials(pg_url, name) if t.state == TrialState.RUNNING and t.intermediate_values]
        if len(busy) >= n:
            return
        assert proc.poll() is None, f"exited early ({proc.returncode}):\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"never had {n} trials mid-epoch:\n{log.read_text()[-3000:]}")


def _interrupt(proc: subprocess.Popen[bytes], times: int, gap_s: float = 1.5) -> float:
    """SIGINT to the process group ``times`` times, ``gap_s`` apart; returns seconds to exit."""
    started = time.monotonic()
    for i in range(times):
        if i:
            time.sleep(gap_s)
        os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=90)
    return time.monotonic() - started


def _check_requeued(pg_url: str, name: str, interrupted: int) -> tuple[int, int]:
    trials = _trials(pg_url, name)
    worker_errors = [t.number for t in trials if "worker error" in str(t.user_attrs.get("fail_reason", ""))]
    assert not worker_errors, f"trials failed with a worker error: {worker_errors}"
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert len(stopped) == interrupted, [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    waiting = {t.system_attrs.get("failed_trial"): t for t in trials if t.state == TrialState.WAITING}
    for t in stopped:
        assert t.user_attrs["stop_cause"] == "shutdown", t.user_attrs.get("fail_reason")
        assert not counts_toward_budget(t.state, t.user_attrs)
        assert t.number in waiting, f"trial {t.number} was not re-queued: {sorted(waiting)}"
        assert waiting[t.number].params == t.params
    state = budget_state(engine_of(open_storage(pg_url)), name)
    counted = sum(counts_toward_budget(t.state, t.user_attrs) for t in trials)
    assert state is not None and state.claimed == state.settled == counted, (state, counted)
    return state.claimed, len(waiting)


def test_ctrl_c_on_sweep_run_requeues_and_exits_130(pg_url: str, study_name: str, tmp_path: Path) -> None:
    spec = synthetic_spec(tmp_path, study_name, trials=8, epochs=20, epoch_seconds=0.4, dedup=False)
    log = tmp_path / "run.log"
    proc = _start([str(BIN / "sweep"), "run", str(spec), "--workers", "2", "--storage", pg_url,
                   "--log-dir", str(tmp_path / "logs")], pg_url, log)
    _wait_running(pg_url, study_name, 2, proc, log)
    seconds = _interrupt(proc, 1)
    output = log.read_text()
    assert proc.returncode == 130, output[-3000:]
    assert "interrupted:" in output and "Traceback" not in output, output[-3000:]
    claimed, waiting = _check_requeued(pg_url, study_name, interrupted=2)
    for worker_log in (tmp_path / "logs" / study_name).iterdir():
        text = worker_log.read_text()
        assert "aborting the current trial" not in text, text[-2000:]  # one Ctrl-C, not two
    print(f"\n[interrupt] sweep run, one Ctrl-C: exit {proc.returncode} after {seconds:.1f}s, "
          f"{waiting} re-queued, claimed = settled = {claimed}")


def test_two_ctrl_c_on_sweep_run_abort_at_once_and_still_requeue(pg_url: str, study_name: str, tmp_path: Path) -> None:
    # 6 s epochs: the second Ctrl-C must not wait for the epoch to end.
    spec = synthetic_spec(tmp_path, study_name, trials=8, epochs=5, epoch_seconds=6.0, dedup=False)
    log = tmp_path / "run.log"
    proc = _start([str(BIN / "sweep"), "run", str(spec), "--workers", "2", "--storage", pg_url,
                   "--log-dir", str(tmp_path / "logs")], pg_url, log)
    _wait_running(pg_url, study_name, 2, proc, log)
    seconds = _interrupt(proc, 2)
    output = log.read_text()
    assert proc.returncode == 130, output[-3000:]
    claimed, waiting = _check_requeued(pg_url, study_name, interrupted=2)
    reasons = {t.user_attrs.get("fail_reason") for t in _trials(pg_url, study_name) if t.state == TrialState.FAIL}
    assert reasons == {"shutdown: worker stopped (training aborted)"}, reasons
    print(f"\n[interrupt] sweep run, two Ctrl-C 1.5 s apart (6 s epochs): exit {proc.returncode} after "
          f"{seconds:.1f}s, {waiting} re-queued, claimed = settled = {claimed}")


def test_ctrl_c_on_plain_worker_once_and_twice(pg_url: str, study_name: str, tmp_path: Path) -> None:
    for times in (1, 2):
        name = f"{study_name}-{times}"
        run_cli("create", str(synthetic_spec(tmp_path, name, trials=3, epochs=5, epoch_seconds=3.0, dedup=False)),
                "--storage", pg_url, check=True)
        log = tmp_path / f"worker-{times}.log"
        proc = _start([str(BIN / "sweep-worker")], pg_url, log, env={"SWEEP_STUDY": name})
        _wait_running(pg_url, name, 1, proc, log)
        seconds = _interrupt(proc, times)
        output = log.read_text()
        assert proc.returncode == 130, output[-3000:]
        lines = [line for line in output.splitlines() if line.startswith("sweep-worker: interrupted (SIGINT)")]
        assert len(lines) == 1 and "re-queued" in lines[0], output[-3000:]
        assert "Traceback" not in output, output[-3000:]
        # The log says what happened: a deliberate stop, not a dead worker.
        assert "went stale" not in output and "was stopped with its worker" in output, output[-3000:]
        claimed, waiting = _check_requeued(pg_url, name, interrupted=1)
        assert claimed == 0
        print(f"\n[interrupt] sweep-worker, {times} Ctrl-C: exit {proc.returncode} after {seconds:.1f}s, "
              f"{waiting} re-queued, claimed = settled = {claimed}")


def test_kill_9_of_sweep_run_stops_its_workers_and_requeues(pg_url: str, study_name: str, tmp_path: Path) -> None:
    # The workers run in their own process group (Ctrl-C above); a kill -9 of `sweep run` must
    # still reach them, or they go on claiming slots that nobody watches.
    spec = synthetic_spec(tmp_path, study_name, trials=8, epochs=20, epoch_seconds=0.4, dedup=False)
    log = tmp_path / "run.log"
    proc = _start([str(BIN / "sweep"), "run", str(spec), "--workers", "2", "--storage", pg_url,
                   "--log-dir", str(tmp_path / "logs")], pg_url, log)
    _wait_running(pg_url, study_name, 2, proc, log)
    workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True,
                                              check=False).stdout.split()]
    assert len(workers) == 2, workers
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 60
    while any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
              for pid in workers):
        assert time.monotonic() < deadline, f"workers {workers} outlived sweep run by 60 s"
        time.sleep(0.2)
    _check_requeued(pg_url, study_name, interrupted=2)
