"""The worker's trial loop: ask a trial with its budget slot, run it, repeat.

The loop is the skeleton (:meth:`WorkerLoop._loop`); one trial is :class:`~workers.parent.trial.TrialRunner`,
its epochs :class:`~workers.parent.epochs.EpochHandler`, the trial record and ending
:class:`~workers.parent.recorder.Recorder`, and every decision a pure function of
:mod:`workers.parent.decisions`.

A worker stops when the budget is spent (after the finalist phase, if any), when the next trial
could not finish before the deadline, after ``max_trials``, on a stop request, or when
``MAX_CONSECUTIVE_FAILURES`` failures in a row had one cause (:class:`~sweep.errors.SystematicFailure`,
the CLI exits 4). A stop request (SIGINT/SIGTERM) lets the current epoch finish; a second one, at
least ``SIGNAL_WINDOW_S`` later, kills the training child at once. When the budget is spent the
worker keeps polling while other trials still run, failing stale ones (whose re-queued copies it
may then take), so a killed worker's last trial is never left behind.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from sweep.errors import BudgetSpent, StorageError
from sweep.storage.engine import HEARTBEAT_INTERVAL_S, db_call, engine_of
from sweep.storage.tables import ensure_tables
from sweep.storage.trial_record import StopCause
from sweep.study import budget
from sweep.study.finalists import open_finalist_phase
from sweep.study.sweeps import Sweep, load_sweep, make_pruner, make_sampler
from workers.parent import decisions
from workers.parent.checkpoints import Checkpoints
from workers.parent.decisions import FailureStreak, failure_cause, objective_value, sampler_seed
from workers.parent.environment import worker_info
from workers.parent.heartbeat import Heartbeat
from workers.parent.prediction import DurationEvidence, predict_duration, sibling_trials
from workers.parent.recorder import Recorder, TrialHook
from workers.parent.runner import TrainerProcess
from workers.parent.trial import TrialRunner

__all__ = ["SIGNAL_WINDOW_S", "TrialHook", "WorkerLoop", "failure_cause", "objective_value", "sampler_seed"]

_logger = logging.getLogger(__name__)
#: Stop requests this close together are one: a terminal's Ctrl-C reaches every process of the
#: group, and a parent (``sweep run``, a container runtime) may forward its own signal a moment later.
SIGNAL_WINDOW_S = 0.5
#: Fewest seconds between two stale-trial checks, as a multiple of the heartbeat interval. A trial
#: turns stale only after a whole grace period (by default 6 intervals) without a beat, so checking
#: once per interval finds it at most one interval later than checking every iteration would, while
#: a worker that finishes trials quickly no longer reads every running trial on each iteration.
STALE_CHECK_INTERVALS = 1.0


class WorkerLoop:
    """Pull trials from one study until its budget or deadline is reached.

    Args:
        storage: RDB storage opened with heartbeats (see ``workers.cli``).
        study_name: The study to work on.
        trainer: The training child; default: one for the spec's ``training.trainer``.
        worker_index: Index among workers started together (shown in logs; sampler seeds differ
            per process regardless, see :func:`~workers.parent.decisions.sampler_seed`).
        max_trials: Stop after this many trials of this worker (None: until the budget is spent).
        heartbeat_file: File touched every beat for container healthchecks.
        poll_interval: Seconds between checks while waiting for other workers' trials.
        clock: Wall clock (seconds since the epoch); tests pass a fake.
        before_tell: Hooks called with each trial's final attrs just before it is told (plots).
        checkpoints: Epoch checkpoints in the artifact store, so a retried trial resumes.
    """

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str, *, trainer: TrainerProcess | None = None,
                 worker_index: int = 0, max_trials: int | None = None, heartbeat_file: str | None = None,
                 poll_interval: float = 2.0, clock: Callable[[], float] = time.time,
                 before_tell: list[TrialHook] | None = None, checkpoints: Checkpoints | None = None) -> None:
        self.study_name = study_name
        self.max_trials = max_trials
        self.poll_interval = poll_interval
        self.clock = clock
        self.sweep: Sweep = load_sweep(storage, study_name)
        spec = self.sweep.spec
        self.info = _identity(spec.sampler.seed, worker_index)
        sampler = make_sampler(spec, worker_index, seed=self.info["sampler_seed"])
        self.study = db_call(lambda: optuna.load_study(study_name=study_name, storage=storage, sampler=sampler,
                                                       pruner=make_pruner(spec)), what=f"load study {study_name!r}")
        self.engine = engine_of(storage)
        ensure_tables(self.engine)  # the budget table, written in each ask's transaction
        self.trainer = trainer or TrainerProcess(spec.training.trainer)
        self.heartbeat = Heartbeat(storage, storage.get_heartbeat_interval() or HEARTBEAT_INTERVAL_S, heartbeat_file)
        self.deadline = spec.budget.deadline.timestamp() if spec.budget.deadline else None
        self.grace = float(getattr(storage, "grace_period", None) or 2 * self.heartbeat.interval)
        self.stop_requested = threading.Event()
        self.force_stop = threading.Event()
        self._first_stop_at: float | None = None
        self.streak = FailureStreak()
        # The per-epoch record goes to the artifact store the checkpoints or plots use, if any.
        store = checkpoints.store if checkpoints is not None else next(
            (h.store for h in before_tell or [] if getattr(h, "store", None) is not None), None)  # type: ignore[attr-defined]
        self.recorder = Recorder(self.study, self.engine, before_tell or [], store=store)
        self.runner = TrialRunner(spec, self.study, self.trainer, self.recorder, checkpoints=checkpoints,
                                  worker=self.info, deadline=self.deadline, clock=clock,
                                  stop_requested=self.stop_requested, force_stop=self.force_stop, streak=self.streak)
        self.trials_run = 0
        self._finalist_waits = 0
        self._orphan_since: float | None = None
        self._stale_checked: float | None = None  # time.monotonic() of the last stale check
        self._siblings: list[optuna.trial.FrozenTrial] | None = None  # previous nights: read once
        self._evidence = DurationEvidence(self.info["gpu"], spec.training.epochs)  # this study's, grown per trial

    @property
    def requeued(self) -> list[int]:
        """Trials this worker gave back (stopped, environment)."""
        return self.recorder.requeued

    def request_stop(self) -> bool:
        """First call: finish after the current epoch. A later one: kill the current trial now.

        Safe to call from a signal handler. Calls within ``SIGNAL_WINDOW_S`` of the first count as
        that one (one Ctrl-C reaching a process twice). Returns whether this call forced the stop.
        """
        now = time.monotonic()
        if self._first_stop_at is None:
            self._first_stop_at = now
            self.stop_requested.set()
            return False
        if now - self._first_stop_at < SIGNAL_WINDOW_S or self.force_stop.is_set():
            return False
        self.force_stop.set()
        self.trainer.abort()
        return True

    def run(self) -> int:
        """Run until done; returns the number of trials this worker ran."""
        self.trainer.start()  # imports the trainer while we ask for the first trial
        self.heartbeat.start()
        try:
            self._loop()
        finally:
            self.heartbeat.stop()
            self.trainer.stop()
        _logger.info("Worker done: %d trials run", self.trials_run)
        return self.trials_run

    def _loop(self) -> None:
        """The skeleton: while there is room for a trial and a slot for it, ask one and run it."""
        while not self.stop_requested.is_set():
            if self.max_trials is not None and self.trials_run >= self.max_trials:
                return
            self._fail_stale()
            if not self._room_before_deadline():
                self._drain_until_deadline()
                return
            trial = self._ask()
            if trial is None:
                if self._no_slot() == "done":
                    return
                continue
            if self.stop_requested.is_set():  # stopped while asking: the trial goes back untouched
                self.recorder.give_back(trial, StopCause.SHUTDOWN, "the worker was stopped as the trial started")
                return
            self._run_one(trial)
            self.trials_run += 1
            self.streak.check()

    def _run_one(self, trial: optuna.Trial) -> None:
        self.heartbeat.begin(trial._trial_id)
        try:
            self.runner.run(trial)
        except StorageError:
            raise
        except Exception as error:  # a bug in a hook or here must fail the trial, not the worker
            self.runner.fail_unexpected(trial, error, traceback.format_exc())
        finally:
            self.heartbeat.end()

    def _fail_stale(self, force: bool = False) -> None:
        """Fail trials whose heartbeat stopped: at most once per ``STALE_CHECK_INTERVALS`` heartbeats."""
        now = time.monotonic()
        if (not force and self._stale_checked is not None
                and now - self._stale_checked < STALE_CHECK_INTERVALS * self.heartbeat.interval):
            return
        db_call(lambda: optuna.storages.fail_stale_trials(self.study), what="fail stale trials")
        self._stale_checked = now

    def _sibling_trials(self) -> list[optuna.trial.FrozenTrial]:
        if self._siblings is None:
            self._siblings = sibling_trials(self.study)
        return self._siblings

    def _room_before_deadline(self) -> bool:
        if self.deadline is None:
            return True
        predicted = predict_duration(self.study, self.info["gpu"], self.sweep.spec.training.epochs,
                                     siblings=self._sibling_trials, evidence=self._evidence)
        now = self.clock()
        if decisions.room_for_trial(predicted, now, self.deadline):
            return True
        _logger.info("Not starting a trial: predicted %.0fs, deadline in %.0fs", predicted, self.deadline - now)
        return False

    def _ask(self) -> optuna.Trial | None:
        """Ask a trial, its budget slot claimed in the same transaction; None when no slot is left."""
        with self.recorder.storage.starting(lambda conn: budget.claim_on_or_raise(conn, self.study_name)):
            try:
                return db_call(self.study.ask, what="ask for a trial")
            except BudgetSpent:
                return None

    def _no_slot(self) -> str:
        """No budget slot was left: ``"wait"`` (poll again) or ``"done"``."""
        if self._others_running():
            self.stop_requested.wait(self.poll_interval)
            return "wait"
        if open_finalist_phase(self.study, self.sweep.spec):
            return "wait"
        if decisions.wait_for_finalists(self.sweep.spec.finalists.top_k, self._finalist_waits):
            self._finalist_waits += 1  # another worker may have just won the flip and be enqueuing them
            self.stop_requested.wait(self.poll_interval)
            return "wait"
        _logger.info("Budget of study %r spent", self.study_name)
        return "done"

    def _others_running(self) -> bool:
        """Whether trials of this budget are still in flight (and so may finish or free a slot).

        A claim with no trial (a trial ended outside a worker, e.g. marked failed in the dashboard,
        or one left by a version that claimed before asking) is released once no trial has been
        RUNNING for a whole grace period.
        """
        state = budget.budget_state(self.engine, self.study_name)
        if state is None or state.in_flight == 0:
            self._orphan_since = None
            return False
        if self._running():
            self._orphan_since = None
            return True
        now = time.monotonic()
        if self._orphan_since is None:
            self._orphan_since = now
        elif decisions.orphans_are_stale(self._orphan_since, now, self.grace, self.heartbeat.interval):
            _logger.warning("%d claimed slot(s) have had no trial for %.0fs (a worker died between claim "
                            "and ask); releasing them", state.in_flight, now - self._orphan_since)
            budget.release(self.engine, self.study_name, state.in_flight)
            self._orphan_since = None
        return True

    def _running(self) -> list[optuna.trial.FrozenTrial]:
        return db_call(lambda: self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)),
                       what="list running trials")

    def _drain_until_deadline(self) -> None:
        """Past the point of starting trials: wait for running ones, then fail any left stale."""
        assert self.deadline is not None
        end = self.deadline + self.grace + self.heartbeat.interval
        while self.clock() < end and not self.stop_requested.is_set():
            if not self._running():
                return
            self._fail_stale()
            self.stop_requested.wait(self.poll_interval)
        self._fail_stale(force=True)


def _identity(spec_seed: int | None, worker_index: int) -> dict[str, Any]:
    """This process's ``worker`` attr: host, pid, GPU, versions, and an id unique across hosts."""
    info = worker_info()
    token = secrets.token_hex(4)  # pids repeat across hosts and containers
    info["id"] = f"{info['host']}:{info['pid']}:{token}"
    info["index"] = worker_index
    info["sampler_seed"] = sampler_seed(spec_seed, token)
    return info
