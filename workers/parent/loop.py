"""The worker's trial loop: claim a budget slot, ask, train in the child, report, tell.

Failure handling follows KerasTuner's classes (see ``sweep.errors``):

* a trial error (the trainer raised, the loss became NaN, the child crashed or timed out) fails
  that trial with its reason and traceback in attrs (``stop_cause = "trial_error"``: it counts),
  and the loop goes on;
* a worker environment error (the trainer does not import, the data set is missing here) fails
  the trial with ``stop_cause = "environment"``: its slot is given back and a copy re-queued;
* ``MAX_CONSECUTIVE_FAILURES`` failures in a row with the same cause stop the worker with
  :class:`~sweep.errors.SystematicFailure` naming it (the CLI exits 4) instead of burning the budget;
* a fatal error (bad storage, missing study) propagates and the CLI exits non-zero.

A stop request (SIGINT/SIGTERM) lets the current epoch finish; a second one, at least
``SIGNAL_WINDOW_S`` later, kills the training child at once. Either way the trial is failed with
``stop_cause = "shutdown"``, its slot released and a copy re-queued (it resumes from its
checkpoint). A trial stopped at the deadline is failed with ``stop_cause = "deadline"`` and its
slot released. Whether a trial counts is decided by ``sweep.study.budget.counts_toward_budget`` alone.
When the budget is spent the worker keeps polling while other trials still run, failing stale
ones (whose re-queued copies it may then take), so a killed worker's last trial is never left behind.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import secrets
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from sweep.errors import (
    MAX_CONSECUTIVE_FAILURES,
    StorageError,
    SystematicFailure,
    TrialDiverged,
    TrialError,
    WorkerEnvironmentError,
)
from sweep.penalties.config import RegularizerConfig
from sweep.penalties.searchspace import suggest_config
from sweep.storage.engine import HEARTBEAT_INTERVAL_S, db_call, engine_of
from sweep.study import budget
from sweep.study.budget import StopCause
from sweep.study.finalists import open_finalist_phase
from sweep.study.sweeps import Sweep, load_sweep, make_pruner, make_sampler
from workers.child.request import TrainRequest
from workers.parent.checkpoints import Checkpoints
from workers.parent.dedup import find_duplicate, reuse_result
from workers.parent.environment import worker_info
from workers.parent.heartbeat import Heartbeat
from workers.parent.prediction import predict_duration
from workers.parent.runner import TrainerProcess

__all__ = ["WorkerLoop", "objective_value", "sampler_seed", "failure_cause", "SIGNAL_WINDOW_S"]

_logger = logging.getLogger(__name__)
TrialHook = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
#: Reused duplicates in a row after which they count toward the budget again: the sampler keeps
#: proposing configs that already ran (a small categorical space is exhausted, or TPE has settled
#: on a config without lambdas), and the study must still be able to finish.
MAX_CONSECUTIVE_DUPLICATES = 20
#: Stop requests this close together are one: a terminal's Ctrl-C reaches every process of the
#: group, and a parent (``sweep run``, a container runtime) may forward its own signal a moment later.
SIGNAL_WINDOW_S = 0.5


def sampler_seed(spec_seed: int | None, token: str) -> int:
    """This process's sampler seed: the spec's seed mixed with the worker's random identity token.

    Two workers (any host, any index) never share a seed, so they do not propose the same
    configs; the seed is recorded in the trial's ``worker`` attr so a run can be replayed.
    """
    mixed = (0 if spec_seed is None else int(spec_seed)) * 1_000_003 + int(token, 16)
    return mixed % (2**31 - 1)


def failure_cause(error: BaseException) -> str:
    """What "the same cause" means for consecutive failures: the error type and its message with
    numbers (trial numbers, epochs, pids) masked."""
    name = getattr(error, "type_name", type(error).__name__)
    return f"{name}: " + re.sub(r"\d+", "N", str(error).splitlines()[0] if str(error) else "")


def objective_value(history: dict[str, list[float]], reduce: str) -> float:
    """Score of a finished trial: validation accuracy at its best or its last epoch."""
    values = history.get("val_accuracy") or []
    if not values:
        raise TrialError("the trainer reported no val_accuracy")
    return float(max(values) if reduce == "best" else values[-1])


class WorkerLoop:
    """Pull trials from one study until its budget or deadline is reached.

    Args:
        storage: RDB storage opened with heartbeats (see ``workers.cli``).
        study_name: The study to work on.
        trainer: The training child; default: one for the spec's ``training.trainer``.
        worker_index: Index among workers started together (shown in logs; sampler seeds differ
            per process regardless, see :func:`sampler_seed`).
        max_trials: Stop after this many trials of this worker (None: until the budget is spent).
        heartbeat_file: File touched every beat for container healthchecks.
        poll_interval: Seconds between checks while waiting for other workers' trials.
        clock: Wall clock (seconds since the epoch); tests pass a fake.
        before_tell: Hooks called with each trial's final attrs just before it is told (plots).
        checkpoints: Epoch checkpoints in the artifact store, so a retried trial resumes.
    """

    def __init__(
        self,
        storage: optuna.storages.RDBStorage,
        study_name: str,
        *,
        trainer: TrainerProcess | None = None,
        worker_index: int = 0,
        max_trials: int | None = None,
        heartbeat_file: str | None = None,
        poll_interval: float = 2.0,
        clock: Callable[[], float] = time.time,
        before_tell: list[TrialHook] | None = None,
        checkpoints: Checkpoints | None = None,
    ) -> None:
        self.storage = storage
        self.study_name = study_name
        self.worker_index = worker_index
        self.max_trials = max_trials
        self.poll_interval = poll_interval
        self.clock = clock
        self.before_tell = before_tell or []
        self.checkpoints = checkpoints
        self.sweep: Sweep = load_sweep(storage, study_name)
        spec = self.sweep.spec
        # Identity unique across processes and hosts: pids repeat across hosts and containers.
        self.info = worker_info()
        token = secrets.token_hex(4)
        self.info["id"] = f"{self.info['host']}:{self.info['pid']}:{token}"
        self.info["index"] = worker_index
        self.info["sampler_seed"] = sampler_seed(spec.sampler.seed, token)
        sampler = make_sampler(spec, worker_index, seed=self.info["sampler_seed"])
        self.study = db_call(
            lambda: optuna.load_study(
                study_name=study_name,
                storage=storage,
                sampler=sampler,
                pruner=make_pruner(spec),
            ),
            what=f"load study {study_name!r}",
        )
        self.engine = engine_of(storage)
        self.trainer = trainer or TrainerProcess(spec.training.trainer)
        interval = storage.get_heartbeat_interval() or HEARTBEAT_INTERVAL_S
        self.heartbeat = Heartbeat(storage, interval, heartbeat_file)
        self.deadline = spec.budget.deadline.timestamp() if spec.budget.deadline else None
        self.grace = float(getattr(storage, "grace_period", None) or 2 * interval)
        self.stop_requested = threading.Event()
        self.force_stop = threading.Event()
        self._first_stop_at: float | None = None
        self.requeued: list[int] = []  # trials this worker gave back (stopped, environment)
        self._streak: list[str] = []  # causes of the consecutive failures just seen
        self._duplicates = 0  # reused duplicates in a row
        self.trials_run = 0
        self._finalist_waits = 0
        self._orphan_since: float | None = None

    # -- control -------------------------------------------------------------------------------
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
        spec = self.sweep.spec
        while not self.stop_requested.is_set():
            if self.max_trials is not None and self.trials_run >= self.max_trials:
                return
            db_call(lambda: optuna.storages.fail_stale_trials(self.study), what="fail stale trials")
            if self.deadline is not None:
                predicted = predict_duration(self.study, self.info["gpu"], spec.training.epochs)
                left = self.deadline - self.clock()
                if left <= predicted:
                    _logger.info("Not starting a trial: predicted %.0fs, deadline in %.0fs", predicted, left)
                    self._drain_until_deadline()
                    return
            slot = budget.claim(self.engine, self.study_name)
            if slot is not None and self.stop_requested.is_set():  # stopped while claiming
                budget.release(self.engine, self.study_name)
                return
            if slot is None:
                if self._others_running():
                    self.stop_requested.wait(self.poll_interval)
                    continue
                if open_finalist_phase(self.study, spec):
                    continue
                if spec.finalists.top_k and self._finalist_waits < 3:
                    # Another worker may have just won the flip and still be enqueuing finalists.
                    self._finalist_waits += 1
                    self.stop_requested.wait(self.poll_interval)
                    continue
                _logger.info("Budget of study %r spent", self.study_name)
                return
            trial = db_call(self.study.ask, what="ask for a trial")
            self.heartbeat.begin(trial._trial_id)
            try:
                self._run_trial(trial)
            except StorageError:
                raise
            except Exception as error:  # a bug in a hook or here must fail the trial, not the worker
                _logger.exception("Trial %d: unexpected error in the worker", trial.number)
                try:
                    self._fail(trial, f"worker error: {type(error).__name__}: {error}", traceback.format_exc(),
                               time.monotonic())
                except Exception:  # already told, or the storage is gone: nothing more to record
                    _logger.exception("Trial %d: could not record the error", trial.number)
            finally:
                self.heartbeat.end()
            self.trials_run += 1
            self._check_streak()

    def _check_streak(self) -> None:
        """Stop the worker when the last failures all had one cause (a systematic failure)."""
        if len(self._streak) >= MAX_CONSECUTIVE_FAILURES and len(set(self._streak[-MAX_CONSECUTIVE_FAILURES:])) == 1:
            raise SystematicFailure(
                f"{MAX_CONSECUTIVE_FAILURES} trials in a row failed with the same cause, stopping this worker: "
                f"{self._last_failure}")

    def _note_outcome(self, error: BaseException | None) -> None:
        if error is None or isinstance(error, TrialDiverged):  # a diverged loss is what a config does
            self._streak.clear()
            return
        self._streak.append(failure_cause(error))
        self._last_failure = str(error).splitlines()[0] if str(error) else type(error).__name__

    def _others_running(self) -> bool:
        """Whether trials of this budget are still in flight (and so may finish or free a slot).

        A worker that died between its claim and its ask leaves a claim with no trial; once no
        trial has been RUNNING for a whole grace period, such claims are released.
        """
        state = budget.budget_state(self.engine, self.study_name)
        if state is None or state.in_flight == 0:
            self._orphan_since = None
            return False
        running = db_call(
            lambda: self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)), what="list running trials"
        )
        if running:
            self._orphan_since = None
            return True
        now = time.monotonic()
        if self._orphan_since is None:
            self._orphan_since = now
        elif now - self._orphan_since > self.grace + self.heartbeat.interval:
            _logger.warning("%d claimed slot(s) have had no trial for %.0fs (a worker died between claim "
                            "and ask); releasing them", state.in_flight, now - self._orphan_since)
            budget.release(self.engine, self.study_name, state.in_flight)
            self._orphan_since = None
        return True

    def _drain_until_deadline(self) -> None:
        """Past the point of starting trials: wait for running ones, then fail any left stale."""
        assert self.deadline is not None
        end = self.deadline + self.grace + self.heartbeat.interval
        while self.clock() < end and not self.stop_requested.is_set():
            running = db_call(
                lambda: self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)),
                what="list running trials",
            )
            if not running:
                return
            db_call(lambda: optuna.storages.fail_stale_trials(self.study), what="fail stale trials")
            self.stop_requested.wait(self.poll_interval)
        db_call(lambda: optuna.storages.fail_stale_trials(self.study), what="fail stale trials")

    # -- one trial -----------------------------------------------------------------------------
    def _set(self, trial: optuna.Trial, key: str, value: Any) -> None:
        db_call(lambda: trial.set_user_attr(key, value), what=f"write trial attr {key!r}")

    def _run_trial(self, trial: optuna.Trial) -> None:
        spec = self.sweep.spec
        started = time.monotonic()
        # Sampling reads the study and writes params: a database blip here must not fail the trial.
        config = db_call(lambda: suggest_config(trial, spec.space), what=f"suggest trial {trial.number}")
        canonical = config.canonical()
        attrs = db_call(lambda: trial.user_attrs, what="read trial attrs")
        seed = int(attrs.get("seed", spec.training.seed))
        inherited = attrs.get("checkpoint")  # a re-queued copy's parent's checkpoint
        for key, value in (
            ("config", canonical),
            ("config_hash", config.config_hash()),
            ("seed", seed),
            ("phase", attrs.get("phase", "search")),
            ("worker", self.info),
        ):
            self._set(trial, key, value)
        _logger.info("Trial %d: %s", trial.number, config.label())
        if spec.dedup:
            source = find_duplicate(self.study, config, seed)
            if source is not None:
                # Recorded (the sampler learns from it) but not counted: its slot buys a new config.
                reuse_result(self.study, trial, source)
                if self._duplicates >= MAX_CONSECUTIVE_DUPLICATES:
                    if self._duplicates == MAX_CONSECUTIVE_DUPLICATES:
                        _logger.warning("The last %d proposals were all configs that already ran (the search space "
                                        "looks exhausted); further duplicates use budget slots so the study can "
                                        "finish", self._duplicates)
                    self._set(trial, "dedup_counted", True)
                self._end_checkpoints(trial, None, inherited, complete=False)
                self._tell(trial, TrialState.COMPLETE, source.value)
                self._duplicates += 1
                return
        self._duplicates = 0
        resume = self.checkpoints.resume_point(trial) if self.checkpoints else None
        if resume is not None:
            self._set(trial, "resumed", {"from_trial": resume.from_trial, "epochs_saved": resume.initial_epoch})
            for step, value in enumerate(resume.curves.get("val_accuracy", [])):
                if math.isfinite(value):
                    db_call(functools.partial(trial.report, value, step), what="report inherited values")
        request = TrainRequest(
            config=canonical,
            setup=spec.training.model_dump(mode="json"),
            trial_number=trial.number,
            seed=seed,
            checkpoint_path=self.checkpoints.local_path(trial.number) if self.checkpoints else None,
            resume_path=resume.path if resume else None,
            initial_epoch=resume.initial_epoch if resume else 0,
        )
        handler = _EpochHandler(self, trial, resume.curves if resume else {})
        try:
            self._train(trial, config, request, handler, inherited, started)
        finally:
            if self.checkpoints:
                self.checkpoints.discard(trial.number)

    def _train(self, trial: optuna.Trial, config: RegularizerConfig, request: TrainRequest,
               handler: _EpochHandler, inherited: dict[str, Any] | None, started: float) -> None:
        """Train in the child and end the trial by its outcome (checkpoints cleaned up first)."""
        spec = self.sweep.spec
        try:
            result = self.trainer.run(request.to_dict(), handler, timeout_s=spec.budget.trial_timeout_s)
        except (TrialError, WorkerEnvironmentError) as error:
            if self.force_stop.is_set():
                self._give_back(trial, StopCause.SHUTDOWN, "shutdown: worker stopped (training aborted)",
                                handler=handler, inherited=inherited)
            elif isinstance(error, WorkerEnvironmentError):
                _logger.error("Trial %d: this worker cannot train: %s", trial.number, error)
                self._give_back(trial, StopCause.ENVIRONMENT, f"environment: {error}",
                                getattr(error, "remote_traceback", None), handler=handler, inherited=inherited)
                self._note_outcome(error)
            else:
                self._end_checkpoints(trial, handler.checkpoint, inherited, complete=False)
                self._fail(trial, str(error), getattr(error, "remote_traceback", None), started)
                self._note_outcome(error)
            return
        result["history"] = handler.curves  # this run's epochs after the inherited ones
        if handler.diagnostics:
            self._set(trial, "diagnostics_by_epoch", handler.diagnostics)
        self._record(trial, config, result, started)
        if result.get("stopped") == "stop" and handler.stop_reason != "deadline":
            self._give_back(trial, StopCause.SHUTDOWN, "shutdown: worker stopped", handler=handler, inherited=inherited)
            return
        complete = result.get("stopped") is None
        value = objective_value(result["history"], spec.objective.reduce) if complete else None
        self._end_checkpoints(trial, handler.checkpoint, inherited, complete=complete)
        if result.get("stopped") == "prune":
            self._tell(trial, TrialState.PRUNED)
            self._note_outcome(None)
        elif result.get("stopped") == "stop":
            self._fail(trial, "deadline: stopped between epochs at the sweep's deadline", None, started,
                       cause=StopCause.DEADLINE)
        else:
            self._tell(trial, TrialState.COMPLETE, value)
            self._note_outcome(None)

    def _end_checkpoints(self, trial: optuna.Trial, own: dict[str, Any] | None, inherited: dict[str, Any] | None,
                         *, complete: bool) -> None:
        """The trial ends for good: keep its model if configured, delete its checkpoint files."""
        if self.checkpoints is None:
            return
        try:
            self.checkpoints.finish(self.study, trial, own, inherited, complete=complete)
        except StorageError:
            raise
        except Exception as error:  # clean-up is housekeeping: never fail the trial over it
            _logger.warning("Trial %d: checkpoint clean-up failed: %s", trial.number, error)

    def _record(self, trial: optuna.Trial, config: RegularizerConfig, result: dict[str, Any], started: float) -> None:
        layers = result.get("placement_layers", {})
        no_effect_all = tuple(sorted(p for p, n in layers.items() if n == 0))
        self._set(trial, "effective_hash", config.config_hash(no_effect_all))
        self._set(trial, "epochs_run", int(result.get("epochs_run", 0)))
        self._set(trial, "duration_s", round(time.monotonic() - started, 3))
        self._set(
            trial,
            "diagnostics",
            {
                "sparsity": result.get("sparsity"),
                "block_norms": result.get("block_norms", {}),
                "placement_layers": layers,
                "param_count": result.get("param_count"),
                "device": result.get("device"),
                "backend": result.get("backend"),
                "trainer_rss_mb": result.get("trainer_rss_mb"),
                "trainer_trials": result.get("trainer_trials"),
            },
        )
        no_effect = [p for p in no_effect_all if getattr(config, p).active]
        if no_effect:
            _logger.warning("Trial %d: placement(s) %s reached no layer", trial.number, no_effect)
            self._set(trial, "no_effect", no_effect)

    def _fail(self, trial: optuna.Trial, reason: str, tb: str | None, started: float,
              cause: StopCause = StopCause.TRIAL_ERROR) -> None:
        _logger.warning("Trial %d failed: %s", trial.number, reason)
        self._set(trial, "fail_reason", reason[:2000])
        self._set(trial, budget.STOP_CAUSE_ATTR, cause.value)
        if tb:
            self._set(trial, "traceback", tb[-8000:])
        self._set(trial, "duration_s", round(time.monotonic() - started, 3))
        self._tell(trial, TrialState.FAIL)

    def _give_back(self, trial: optuna.Trial, cause: StopCause, reason: str, tb: str | None = None, *,
                   handler: _EpochHandler | None = None, inherited: dict[str, Any] | None = None) -> None:
        """Fail a trial that did not get to count, release its slot and re-queue a copy.

        Its checkpoint stays for the copy to resume from; one it inherited is deleted once it
        wrote a newer one of its own.
        """
        if self.checkpoints is not None and inherited and handler is not None and handler.checkpoint:
            self.checkpoints.remove(inherited)
        self._set(trial, "fail_reason", reason[:2000])
        self._set(trial, budget.STOP_CAUSE_ATTR, cause.value)
        if tb:
            self._set(trial, "traceback", tb[-8000:])
        self._tell(trial, TrialState.FAIL)
        frozen = db_call(lambda: self.study._storage.get_trial(trial._trial_id), what="read trial")
        why = "was stopped with its worker" if cause == StopCause.SHUTDOWN else f"could not run here ({cause.value})"
        budget.requeue_copy(self.study, frozen, why)
        self.requeued.append(trial.number)

    def _tell(self, trial: optuna.Trial, state: TrialState, value: float | None = None) -> None:
        def _do() -> None:
            try:
                self.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
            except RuntimeError as error:  # tell retried after a commit that did land
                if "already finished" not in str(error) and "finished" not in str(error):
                    raise

        if self.before_tell:
            # Artifacts cannot be attached to a finished trial: hooks see its final attrs first.
            snapshot = db_call(lambda: self.study._storage.get_trial(trial._trial_id), what="read trial")
            for hook in self.before_tell:
                try:
                    hook(self.study, snapshot)
                except Exception as error:  # hooks are extras (plots): never fail the loop or the trial
                    _logger.warning("before-tell hook %s failed: %s", getattr(hook, "__name__", hook), error)
        db_call(_do, what=f"tell trial {trial.number}", attempts=20)
        attrs = db_call(lambda: self.study._storage.get_trial_user_attrs(trial._trial_id), what="read trial attrs")
        if budget.counts_toward_budget(state, attrs):
            budget.settle(self.engine, self.study_name)
        else:  # the slot buys another trial (see sweep.study.budget.counts_toward_budget)
            budget.release(self.engine, self.study_name)


class _EpochHandler:
    """Per-epoch callback in the parent: report, record progress, decide continue/prune/stop."""

    def __init__(self, loop: WorkerLoop, trial: optuna.Trial, inherited: dict[str, list[float]]) -> None:
        self.loop = loop
        self.trial = trial
        self.stop_reason: str | None = None
        self.can_prune = not isinstance(loop.study.pruner, optuna.pruners.NopPruner)
        self.curves: dict[str, list[float]] = {k: list(v) for k, v in inherited.items()}
        self.checkpoint: dict[str, Any] | None = None
        self.diagnostics: list[dict[str, Any]] = []

    def __call__(self, metrics: dict[str, Any]) -> str:
        epoch = int(metrics["epoch"])
        value = float(metrics.get("val_accuracy", math.nan))
        total = self.loop.sweep.spec.training.epochs
        _logger.info(
            "Trial %d epoch %d/%d: val_accuracy %.4f loss %.4f (%.1fs)",
            self.trial.number, epoch + 1, total, value, metrics.get("loss", math.nan),
            metrics.get("epoch_seconds", 0.0),
        )
        if math.isfinite(value):
            db_call(lambda: self.trial.report(value, epoch), what=f"report trial {self.trial.number}")
        for key, metric in metrics.items():
            if key != "epoch" and isinstance(metric, (int, float)):
                self.curves.setdefault(key, []).append(float(metric))
        if isinstance(metrics.get("diagnostics"), dict):
            self.diagnostics.append({"epoch": epoch, **metrics["diagnostics"]})
        # Written every epoch: live curves in the dashboard, and what a resumed retry inherits.
        db_call(lambda: self.trial.set_user_attr("curves", self.curves), what="write curves")
        if self.loop.checkpoints is not None:
            self.checkpoint = self.loop.checkpoints.upload(self.loop.study, self.trial, epoch, self.checkpoint)
        last_epoch = epoch + 1 >= total
        if self.loop.deadline is not None and self.loop.clock() >= self.loop.deadline and not last_epoch:
            self.stop_reason = "deadline"  # a trial that just ran its last epoch is done, not cut off
            return "stop"
        if self.loop.stop_requested.is_set():
            self.stop_reason = "shutdown"
            return "stop"
        if self.can_prune and db_call(self.trial.should_prune, what="ask the pruner"):
            _logger.info("Trial %d pruned at epoch %d", self.trial.number, epoch + 1)
            return "prune"
        return "continue"

