"""One trial in the worker: its config, dedup, resume, training in the child, and its end.

Failure handling follows KerasTuner's classes (see ``sweep.errors``): a trial error fails the
trial (``stop_cause = "trial_error"``: it counts); an environment error gives the slot back and
re-queues a copy (``"environment"``); a stop request or the deadline ends the trial between epochs
(``"shutdown"``: re-queued, resumes from its checkpoint; ``"deadline"``: slot released).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from sweep.errors import StorageError, TrialError, WorkerEnvironmentError
from sweep.penalties.config import RegularizerConfig
from sweep.penalties.searchspace import suggest_config
from sweep.spec.model import SweepSpec
from sweep.storage.engine import db_call
from sweep.storage.trial_record import Attr, StopCause
from workers.child.request import TrainRequest, TrainResult
from workers.parent import decisions
from workers.parent.checkpoints import Checkpoints
from workers.parent.decisions import Ending, FailureStreak
from workers.parent.dedup import find_duplicate, reuse_result
from workers.parent.epochs import EpochHandler
from workers.parent.recorder import Recorder
from workers.parent.runner import TrainerProcess

__all__ = ["TrialRunner"]

_logger = logging.getLogger(__name__)


class TrialRunner:
    """Runs one asked trial to its end.

    Args:
        spec: The sweep's spec.
        study: The study (this worker's sampler and pruner).
        trainer: The training child.
        recorder: Writes attrs and ends trials.
        checkpoints: Epoch checkpoints in the artifact store (None: none).
        worker: This worker's identity, written on each trial.
        deadline: The sweep's deadline (seconds since the epoch), None for none.
        clock: Wall clock (tests pass a fake).
        stop_requested: Set when the worker should stop after the current epoch.
        force_stop: Set when the current training was aborted.
        streak: The failures in a row (a systematic failure stops the worker).
    """

    def __init__(self, spec: SweepSpec, study: optuna.Study, trainer: TrainerProcess, recorder: Recorder, *,
                 checkpoints: Checkpoints | None, worker: dict[str, Any], deadline: float | None,
                 clock: Callable[[], float], stop_requested: threading.Event, force_stop: threading.Event,
                 streak: FailureStreak) -> None:
        self.spec = spec
        self.study = study
        self.trainer = trainer
        self.recorder = recorder
        self.checkpoints = checkpoints
        self.worker = worker
        self.deadline = deadline
        self.clock = clock
        self.stop_requested = stop_requested
        self.force_stop = force_stop
        self.streak = streak
        self.can_prune = not isinstance(study.pruner, optuna.pruners.NopPruner)
        self.duplicates = 0  # reused duplicates in a row

    def run(self, trial: optuna.Trial) -> None:
        """Run ``trial``: reuse an equal config's result, or train it and end it by its outcome.

        Args:
            trial: The trial just asked.
        """
        started = time.monotonic()
        config, seed, inherited = self._start(trial)
        if self.spec.dedup and self._reuse(trial, config, seed, inherited):
            return
        self.duplicates = 0
        try:
            self._train(trial, config, seed, inherited, started)
        finally:
            if self.checkpoints:
                self.checkpoints.discard(trial.number)

    def fail_unexpected(self, trial: optuna.Trial, error: Exception, tb: str) -> None:
        """Fail a trial after a bug in a hook or in the worker (the worker goes on).

        Args:
            trial: The trial that was running.
            error: The unexpected error.
            tb: Its traceback.
        """
        _logger.error("Trial %d: unexpected error in the worker", trial.number, exc_info=error)
        try:
            self.recorder.fail(trial, f"worker error: {type(error).__name__}: {error}", tb, time.monotonic())
        except Exception:  # already told, or the storage is gone: nothing more to record
            _logger.exception("Trial %d: could not record the error", trial.number)

    def _start(self, trial: optuna.Trial) -> tuple[RegularizerConfig, int, dict[str, Any] | None]:
        """Sample the config and write the trial's identity attrs; returns (config, seed, inherited checkpoint)."""
        # The sampled params are committed with the attrs below, in one transaction.
        with self.recorder.storage.holding_params(trial._trial_id):
            # Sampling reads the study: a database blip here must not fail the trial.
            config = db_call(lambda: suggest_config(trial, self.spec.space), what=f"suggest trial {trial.number}")
            # The attrs it was created with (a re-queued copy's, a finalist's seed): Optuna read the
            # trial when it was asked and keeps that copy current; Trial.user_attrs would read it again.
            attrs = dict(trial._cached_frozen_trial.user_attrs)
            seed = int(attrs.get(Attr.SEED, self.spec.training.seed))
            self.recorder.set_many(trial, {
                Attr.CONFIG: config.canonical(),
                Attr.CONFIG_HASH: config.config_hash(),
                Attr.SEED: seed,
                Attr.PHASE: attrs.get(Attr.PHASE, "search"),
                Attr.WORKER: self.worker,
            })
        _logger.info("Trial %d: %s", trial.number, config.label())
        return config, seed, attrs.get(Attr.CHECKPOINT)  # a re-queued copy's parent's checkpoint

    def _reuse(self, trial: optuna.Trial, config: RegularizerConfig, seed: int,
               inherited: dict[str, Any] | None) -> bool:
        """Complete the trial with an equal finished config's result, if there is one."""
        source = find_duplicate(self.study, config, seed)
        if source is None:
            return False
        # Recorded (the sampler learns from it) but not counted: its slot buys a new config.
        reuse_result(self.study, trial, source)
        if decisions.duplicate_counts(self.duplicates):
            if self.duplicates == decisions.MAX_CONSECUTIVE_DUPLICATES:
                _logger.warning("The last %d proposals were all configs that already ran (the search space looks "
                                "exhausted); further duplicates use budget slots so the study can finish",
                                self.duplicates)
            self.recorder.defer(trial, {Attr.DEDUP_COUNTED: True})
        self._end_checkpoints(trial, None, inherited, complete=False)
        self.recorder.tell(trial, TrialState.COMPLETE, source.value)
        self.duplicates += 1
        return True

    def _request(self, trial: optuna.Trial, config: RegularizerConfig, seed: int) -> tuple[TrainRequest, EpochHandler]:
        """The training request and the epoch handler, resuming from an inherited checkpoint."""
        resume = self.checkpoints.resume_point(trial) if self.checkpoints else None
        if resume is not None:
            resumed = {"from_trial": resume.from_trial, "epochs_saved": resume.initial_epoch}
            self.recorder.set(trial, Attr.RESUMED, resumed)
            for step, value in enumerate(resume.curves.get("val_accuracy", [])):
                if math.isfinite(value):
                    db_call(functools.partial(trial.report, value, step), what="report inherited values")
        request = TrainRequest(
            config=config.canonical(), setup=self.spec.training.model_dump(mode="json"), trial_number=trial.number,
            seed=seed, checkpoint_path=self.checkpoints.local_path(trial.number) if self.checkpoints else None,
            resume_path=resume.path if resume else None, initial_epoch=resume.initial_epoch if resume else 0,
        )
        handler = EpochHandler(trial, total_epochs=self.spec.training.epochs, verdict=self._verdict(trial),
                               inherited=resume.curves if resume else None, upload=self._upload(trial))
        return request, handler

    def _verdict(self, trial: optuna.Trial) -> Callable[[int], tuple[str, str | None]]:
        def verdict(epoch: int) -> tuple[str, str | None]:
            return decisions.epoch_verdict(
                epoch=epoch, total=self.spec.training.epochs, now=self.clock(), deadline=self.deadline,
                stop_requested=self.stop_requested.is_set(),
                should_prune=lambda: self.can_prune and db_call(trial.should_prune, what="ask the pruner"))
        return verdict

    def _upload(self, trial: optuna.Trial) -> Callable[[int, dict[str, Any] | None], dict[str, Any] | None] | None:
        checkpoints = self.checkpoints
        if checkpoints is None:
            return None
        return lambda epoch, previous: checkpoints.upload(self.study, trial, epoch, previous)

    def _train(self, trial: optuna.Trial, config: RegularizerConfig, seed: int, inherited: dict[str, Any] | None,
               started: float) -> None:
        """Train in the child and end the trial by its outcome (checkpoints cleaned up first)."""
        request, handler = self._request(trial, config, seed)
        try:
            result = self.trainer.run(request.to_dict(), handler, timeout_s=self.spec.budget.trial_timeout_s)
        except (TrialError, WorkerEnvironmentError) as error:
            self.recorder.stage(trial, handler.curves, handler.diagnostics, curves_in_attrs=handler.upload is not None)
            self._failed(trial, error, handler, inherited, started)
            return
        # Written once, at the tell; with checkpoints a curves attr was also written each epoch.
        self.recorder.stage(trial, handler.curves, handler.diagnostics, curves_in_attrs=handler.upload is not None)
        self._record(trial, config, result, started)
        self._end(trial, decisions.ending_of(result.stopped, handler.stop_reason), handler, inherited, started)

    def _failed(self, trial: optuna.Trial, error: TrialError | WorkerEnvironmentError, handler: EpochHandler,
                inherited: dict[str, Any] | None, started: float) -> None:
        tb = getattr(error, "remote_traceback", None)
        if self.force_stop.is_set():
            self._give_back(trial, StopCause.SHUTDOWN, "shutdown: worker stopped (training aborted)", None,
                            handler, inherited)
        elif isinstance(error, WorkerEnvironmentError):
            _logger.error("Trial %d: this worker cannot train: %s", trial.number, error)
            self._give_back(trial, StopCause.ENVIRONMENT, f"environment: {error}", tb, handler, inherited)
            self.streak.note(error)
        else:
            self._end_checkpoints(trial, handler.checkpoint, inherited, complete=False)
            self.recorder.fail(trial, str(error), tb, started)
            self.streak.note(error)

    def _end(self, trial: optuna.Trial, ending: Ending, handler: EpochHandler, inherited: dict[str, Any] | None,
             started: float) -> None:
        if ending == Ending.SHUTDOWN:
            self._give_back(trial, StopCause.SHUTDOWN, "shutdown: worker stopped", None, handler, inherited)
            return
        complete = ending == Ending.COMPLETE
        value = decisions.objective_value(handler.curves, self.spec.objective.reduce) if complete else None
        self._end_checkpoints(trial, handler.checkpoint, inherited, complete=complete)
        if ending == Ending.PRUNED:
            self.recorder.tell(trial, TrialState.PRUNED)
            self.streak.note(None)
        elif ending == Ending.DEADLINE:
            self.recorder.fail(trial, "deadline: stopped between epochs at the sweep's deadline", None, started,
                               cause=StopCause.DEADLINE)
        else:
            self.recorder.tell(trial, TrialState.COMPLETE, value)
            self.streak.note(None)

    def _give_back(self, trial: optuna.Trial, cause: StopCause, reason: str, tb: str | None, handler: EpochHandler,
                   inherited: dict[str, Any] | None) -> None:
        """Give the trial back; its checkpoint stays for the copy, an inherited one goes once it has its own."""
        if self.checkpoints is not None and inherited and handler.checkpoint:
            self.checkpoints.remove(inherited)
        self.recorder.give_back(trial, cause, reason, tb)

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

    def _record(self, trial: optuna.Trial, config: RegularizerConfig, result: TrainResult, started: float) -> None:
        no_effect_all = tuple(sorted(p for p, n in result.placement_layers.items() if n == 0))
        attrs: dict[str, Any] = {
            Attr.EFFECTIVE_HASH: config.config_hash(no_effect_all),
            Attr.EPOCHS_RUN: int(result.epochs_run),
            Attr.DURATION_S: round(time.monotonic() - started, 3),
            Attr.DIAGNOSTICS: result.diagnostics(),
        }
        no_effect = [p for p in no_effect_all if getattr(config, p).active]
        if no_effect:
            _logger.warning("Trial %d: placement(s) %s reached no layer", trial.number, no_effect)
            attrs[Attr.NO_EFFECT] = no_effect
        self.recorder.defer(trial, attrs)  # written with the trial's end, in one transaction
