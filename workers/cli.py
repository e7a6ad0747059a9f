"""``sweep-worker``: pull trials from a study until its budget or deadline is reached.

Configuration precedence (as in optuna-dashboard): command-line flag > environment > default.
Exit status: 0 when the budget or deadline is reached or after a clean SIGTERM; 130 after Ctrl-C
(SIGINT; the current trial is re-queued, its slot given back); non-zero on a fatal error (bad
storage URL, unreachable database, unknown study: 2/3; a systematic failure, e.g. the data set
missing on this host: 4), with one clear message.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import optuna

from sweep.envargs import env_number
from sweep.errors import RegsweepError, StorageError, StudyNotFoundError
from sweep.logs import setup_logging
from sweep.masking import mask_secrets
from sweep.storage.engine import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S, StorageConfig, open_storage
from sweep.storage.retry import worker_outage
from sweep.storage.url import hide_password_from_ps, resolve_storage_url
from sweep.study.budget import ReleaseSlotAndRetry
from workers.parent.follow import next_open_study
from workers.parent.loop import WorkerLoop
from workers.parent.recorder import TrialHook

if TYPE_CHECKING:
    from workers.parent.checkpoints import Checkpoints

__all__ = ["main", "build_parser"]

_logger = logging.getLogger("workers")


def build_parser() -> argparse.ArgumentParser:
    """The ``sweep-worker`` argument parser."""
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="sweep-worker",
        description="Train trials of a regsweep study until its budget or deadline is reached.",
    )
    p.add_argument("--storage", help="storage URL (env SWEEP_STORAGE, then OPTUNA_STORAGE; default sqlite:///regsweep.db)")
    p.add_argument("--study", help="study name (env SWEEP_STUDY)")
    p.add_argument("--follow", metavar="PREFIX",
                   help="run forever: work on the newest open study named PREFIX-* (nightly studies from "
                        "`sweep schedule`), then wait for the next one (env SWEEP_FOLLOW)")
    p.add_argument(
        "--follow-poll", type=float, default=30.0, help="seconds between looks for a new study with --follow"
    )
    p.add_argument(
        "--artifacts",
        default=env("SWEEP_ARTIFACTS"),
        help="artifact directory for learning-curve plots (env SWEEP_ARTIFACTS)",
    )
    p.add_argument("--keep-models", action="store_true",
                   default=env("SWEEP_KEEP_MODELS", "").lower() in ("1", "true", "yes"),
                   help="with --artifacts: keep the trained model of each COMPLETE trial as trial-N-model.keras "
                        "(env SWEEP_KEEP_MODELS=1); checkpoints of finished trials are always deleted")
    p.add_argument(
        "--heartbeat-file",
        default=env("SWEEP_HEARTBEAT_FILE"),
        help="file touched on every heartbeat, for container healthchecks (env SWEEP_HEARTBEAT_FILE)",
    )
    p.add_argument("--max-trials", type=int, default=None, help="stop after this many trials of this worker")
    p.add_argument(
        "--worker-index",
        **env_number("SWEEP_WORKER_INDEX", "0"),
        help="index among workers started together (sampler seed offset)",
    )
    p.add_argument("--heartbeat-interval", **env_number("SWEEP_HEARTBEAT_INTERVAL", str(HEARTBEAT_INTERVAL_S)),
                   help=f"seconds between trial heartbeats (default {HEARTBEAT_INTERVAL_S})")
    p.add_argument("--grace-period", **env_number("SWEEP_GRACE_PERIOD", str(GRACE_PERIOD_S)),
                   help=f"seconds without heartbeat before a trial is stale and re-queued (default {GRACE_PERIOD_S})")
    p.add_argument("--max-outage", **env_number("SWEEP_MAX_OUTAGE", "900", float),
                   help="seconds a worker waits out an unreachable database before giving up (default 900)")
    p.add_argument("--log-level", default=env("SWEEP_LOG_LEVEL", "INFO"), help="logging level (env SWEEP_LOG_LEVEL)")
    p.add_argument("--require-gpu", action=argparse.BooleanOptionalAction,
                   default=env("SWEEP_REQUIRE_GPU", "0").strip().lower() in ("1", "true", "yes"),
                   help="exit with status 3, before claiming any trial, unless the Keras backend sees a GPU "
                        "(env SWEEP_REQUIRE_GPU=1; set in the compose GPU services)")
    return p


def _target(study: str | None, follow: str | None) -> tuple[str | None, str | None]:
    """Resolve what to work on: a flag beats the environment, and study and follow exclude each other.

    Compose files often set SWEEP_STUDY for every worker; ``--follow`` on a command line must win.
    """
    if study and follow:
        raise ValueError("give --study or --follow, not both")
    if study or follow:
        return study, follow
    study, follow = os.environ.get("SWEEP_STUDY") or None, os.environ.get("SWEEP_FOLLOW") or None
    if study and follow:
        raise ValueError("SWEEP_STUDY and SWEEP_FOLLOW are both set; unset one")
    return study, follow


def _idle(stopping: threading.Event, seconds: float, heartbeat_file: str | None, interval: float) -> None:
    """Wait (until ``stopping``) while touching the heartbeat file: a --follow worker waiting for
    the next night is alive, and its container must stay healthy rather than look hung."""
    end = time.monotonic() + seconds
    while not stopping.is_set() and (left := end - time.monotonic()) > 0:
        if heartbeat_file:
            try:
                Path(heartbeat_file).touch()
            except OSError as error:  # the healthcheck then reports it; waiting goes on
                _logger.debug("Could not touch %s: %s", heartbeat_file, error)
        stopping.wait(min(interval, left))


def _refusal(args: argparse.Namespace) -> tuple[int, str] | None:
    """Why the arguments cannot start a worker, as (exit status, message); None when they can."""
    try:
        args.study, args.follow = _target(args.study, args.follow)
    except ValueError as error:
        return 2, str(error)
    if not args.study and not args.follow:
        return 2, "--study (or SWEEP_STUDY) or --follow is required"
    if not 1 <= args.heartbeat_interval < args.grace_period:
        # 0 made Optuna raise a ValueError traceback; a grace period not longer than the interval
        # fails every running trial as stale, so the sweep re-queues forever.
        return 2, (f"expected 1 <= --heartbeat-interval < --grace-period, received "
                   f"heartbeat_interval={args.heartbeat_interval}, grace_period={args.grace_period}")
    if args.require_gpu:
        from workers.parent.environment import gpu_problem

        # Before the storage is even opened: no budget slot is claimed, no trial consumed.
        problem = gpu_problem()
        if problem is not None:
            return 3, f"a GPU is required (--require-gpu / SWEEP_REQUIRE_GPU=1) but none is usable: {problem}"
    return None


class _Stops:
    """SIGINT/SIGTERM: the first lets the current epoch finish, a later one aborts the trial."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.received: list[int] = []
        self.current: list[WorkerLoop] = []
        self.finished: list[WorkerLoop] = []

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        first = not self.received
        self.received.append(signum)
        self.stopping.set()
        forced = [loop.request_stop() for loop in self.current]
        if first:
            _logger.warning("Received %s: finishing the current epoch, then exiting (again to abort)", name)
        elif any(forced):
            _logger.warning("Received %s again: aborting the current trial now (it is re-queued)", name)
        # else: the same stop arriving twice (group Ctrl-C plus a forwarded signal): one request

    def summary(self) -> tuple[int, str]:
        """Exit status and the one "interrupted" line after a stop signal."""
        requeued = [n for loop in self.finished for n in loop.requeued]
        ran = sum(loop.trials_run for loop in self.finished)
        line = (f"sweep-worker: interrupted ({signal.Signals(self.received[0]).name}): {ran} trial(s) run"
                + (f", trial(s) {requeued} re-queued with their budget slots given back" if requeued else ""))
        # Ctrl-C is an interruption (130, like `sweep` and shells); SIGTERM is a clean stop (docker stop).
        return (130 if self.received[0] == signal.SIGINT else 0), line


def _extras(args: argparse.Namespace) -> tuple[list[TrialHook], Checkpoints | None]:
    """Plots and checkpoints in the artifact store, with ``--artifacts``."""
    if not args.artifacts:
        return [], None
    from workers.parent.artifacts import CurveArtifacts, DiagnosticArtifacts
    from workers.parent.checkpoints import Checkpoints

    curve_plots = CurveArtifacts(args.artifacts)
    return ([curve_plots, DiagnosticArtifacts(curve_plots.store)],
            Checkpoints(curve_plots.store, keep_models=args.keep_models))


def _serve(args: argparse.Namespace, storage: optuna.storages.RDBStorage, stops: _Stops) -> None:
    """Work on the study (or each night's study with ``--follow``) until done or stopped.

    A storage outage longer than ``db_call``'s own retries is waited out here, as the one retry
    policy says for it (:func:`sweep.storage.retry.worker_outage`: every 30 s, up to
    ``--max-outage`` seconds), instead of leaving the night's sweep one worker short.
    """
    hooks, checkpoints = _extras(args)
    policy = worker_outage(args.max_outage)
    outage_since: float | None = None
    attempt = 0
    while not stops.stopping.is_set():
        try:
            name = args.study or next_open_study(storage, args.follow)
            if name is None:
                _idle(stops.stopping, args.follow_poll, args.heartbeat_file, args.heartbeat_interval)
                continue
            loop = WorkerLoop(storage, name, worker_index=args.worker_index, max_trials=args.max_trials,
                              heartbeat_file=args.heartbeat_file, before_tell=hooks, checkpoints=checkpoints)
            stops.current[:] = [loop]
            if stops.stopping.is_set():  # a signal while the study was loading
                break
            stops.finished.append(loop)
            loop.run()
            outage_since, attempt = None, 0
        except StorageError as error:
            if isinstance(error, StudyNotFoundError):
                raise
            outage_since = outage_since or time.monotonic()  # trials in flight were failed or re-queued
            attempt += 1
            delay = policy.next_delay(attempt, time.monotonic() - outage_since)
            if delay is None:
                raise
            _logger.error("Storage unavailable (%s); retrying in %.0fs", error, delay)
            stops.stopping.wait(delay)
            continue
        if not args.follow:
            break
        _idle(stops.stopping, args.follow_poll, args.heartbeat_file, args.heartbeat_interval)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sweep-worker``."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    hide_password_from_ps()
    refusal = _refusal(args)
    if refusal is not None:
        print(f"sweep-worker: error: {refusal[1]}", file=sys.stderr)
        return refusal[0]
    stops = _Stops()
    try:
        storage = open_storage(
            resolve_storage_url(args.storage),
            StorageConfig.for_worker(args.heartbeat_interval, args.grace_period),
            # A trial this worker finds stale (its worker died): slot back, copy re-queued.
            stale_trial_callback=ReleaseSlotAndRetry(),
        )
        stops.install()
        # What this process has imported and opened by now lives as long as it does. Frozen, it is
        # left out of the interpreter's full collections: each walked it for ~0.1 s (about one
        # every 100 trivial trials). The training child does the same (workers.child.process).
        gc.freeze()
        _serve(args, storage, stops)
    except RegsweepError as error:
        print(f"sweep-worker: error: {mask_secrets(str(error))}", file=sys.stderr)
        return error.exit_code or 1
    if stops.received:
        code, line = stops.summary()
        print(line, file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
