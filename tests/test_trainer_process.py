"""The worker's training child across trials: a trial whose epoch callback fails in the worker
(e.g. the storage refuses a report) must not leave the child mid-conversation for the next trial.
A real spawned child running the synthetic trainer."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sweep.errors import TrainerCrashed
from tests.reliability.support import alive
from workers.child.request import TrainRequest
from workers.parent.runner import TrainerProcess


def _request(number: int) -> dict[str, Any]:
    return TrainRequest(config={"kernel": {"kind": "l2", "l2": 1e-4}}, setup={"epochs": 3},
                        trial_number=number, seed=number).to_dict()


def test_a_failing_epoch_callback_does_not_spill_into_the_next_trial() -> None:
    trainer = TrainerProcess("workers.synthetic:train")
    trainer.start()
    try:
        def refused(metrics: dict[str, Any]) -> str:
            raise RuntimeError("Trial#1 has already finished and can not be updated.")

        with pytest.raises(RuntimeError, match="already finished"):
            trainer.run(_request(1), refused, timeout_s=60)

        epochs: list[int] = []

        def answered(metrics: dict[str, Any]) -> str:
            epochs.append(int(metrics["epoch"]))
            return "continue"

        result = trainer.run(_request(2), answered, timeout_s=60)
        assert epochs == [0, 1, 2]
        assert result.epochs_run == 3
    finally:
        trainer.stop()


def test_a_recycled_childs_replacement_imports_during_its_last_trial() -> None:
    trainer = TrainerProcess("workers.synthetic:train", recycle_after=2)
    trainer.start()
    try:
        def pid() -> int | None:
            return trainer._process.pid if trainer._process else None

        seen, spares = [], []

        def watch(metrics: dict[str, Any]) -> str:
            spare = trainer._spare
            spares.append(spare.pid if spare is not None and spare.is_alive() else None)
            return "continue"

        for number in range(3):
            before = pid()
            result = trainer.run(_request(number), watch, timeout_s=60)
            assert result.epochs_run == 3
            seen.append((before, pid(), result.trainer_trials))
        (a0, a1, n0), (b0, b1, n1), (c0, c1, n2) = seen
        assert a0 == a1 == b0 and [n0, n1, n2] == [1, 2, 1]
        # No spare during the child's first trial; during its last one a spare was already running,
        # and it is the child that took over as soon as that last result came in.
        assert spares[:3] == [None, None, None] and spares[3] is not None and spares[3:6] == [spares[3]] * 3
        assert b1 == spares[3] != b0 and c0 == c1 == b1
        assert trainer._process is not None and trainer._process.is_alive() and trainer._spare is None
        # The retired child exits on its own, reaped in the background.
        gone_by = time.monotonic() + 10
        while time.monotonic() < gone_by and alive(b0):
            time.sleep(0.05)
        assert not alive(b0)
    finally:
        trainer.stop()
    assert trainer._process is None


def test_stopping_during_a_childs_last_trial_kills_its_spare_too() -> None:
    trainer = TrainerProcess("workers.synthetic:train", recycle_after=1)
    trainer.start()
    spares: list[int] = []

    def watch(metrics: dict[str, Any]) -> str:
        if trainer._spare is not None:
            spares.append(trainer._spare.pid)
        return "stop" if metrics["epoch"] == 0 else "continue"

    try:
        trainer.run(_request(0), watch, timeout_s=60)
    finally:
        spare = trainer._process  # the spare took over after the result
        trainer.stop()
    assert spares and spare is not None and spare.pid == spares[0]
    assert not spare.is_alive() and trainer._process is None and trainer._spare is None


def test_a_child_that_dies_in_its_last_trial_leaves_its_spare_to_the_next() -> None:
    trainer = TrainerProcess("tests.trainers:faulty", recycle_after=1)
    trainer.start()
    try:
        crashing = TrainRequest(config={}, setup={"epochs": 3, "trainer_options": {"fault": "segv", "on_trials": "0"}},
                                trial_number=0, seed=0).to_dict()
        with pytest.raises(TrainerCrashed, match="SIGSEGV"):
            trainer.run(crashing, lambda metrics: "continue", timeout_s=60)
        spare = trainer._spare
        assert spare is not None and spare.is_alive()
        training: list[int | None] = []

        def watch(metrics: dict[str, Any]) -> str:
            training.append(trainer._process.pid if trainer._process else None)
            return "continue"

        result = trainer.run(_request(1), watch, timeout_s=60)
        assert result.epochs_run == 3 and result.trainer_trials == 1
        assert training == [spare.pid] * 3  # the spare trained it, no child started in its place
    finally:
        trainer.stop()


def test_the_child_imports_its_trainer_not_the_workers_modules() -> None:
    # A child used to run the parent's __main__ again (multiprocessing's spawn), which in a worker
    # is the sweep-worker script: Optuna, SQLAlchemy and the worker CLI in every child.
    trainer = TrainerProcess("tests.trainers:imported_modules")
    trainer.start()
    try:
        seen: list[dict[str, Any]] = []
        trainer.run(_request(0), lambda metrics: seen.append(metrics) or "continue", timeout_s=60)
    finally:
        trainer.stop()
    assert seen and seen[0]["modules"], seen
    loaded = set(seen[0]["modules"])
    assert {"workers.child.process", "tests.trainers"} <= loaded
    assert not loaded & {"optuna", "sqlalchemy", "workers.cli", "workers.parent.runner", "pytest"}, \
        sorted(loaded & {"optuna", "sqlalchemy", "workers.cli", "workers.parent.runner", "pytest"})


def test_stopping_a_child_still_importing_kills_it_at_once() -> None:
    trainer = TrainerProcess("keras")  # imports TensorFlow: seconds before it is ready
    trainer.start()
    process = trainer._process
    trainer.stop()
    assert process is not None and not process.is_alive() and trainer._process is None


def test_what_a_trial_leaves_in_reference_cycles_is_collected_after_it() -> None:
    # The child freezes what its trainer imported, out of later collections; what trials allocate
    # after that must still be collected, or each trial's model stays in memory.
    trainer = TrainerProcess("tests.trainers:cyclic_garbage")
    trainer.start()
    try:
        measured = [trainer.run(_request(number), lambda metrics: "continue", timeout_s=60).trainer_rss_mb
                    for number in range(6)]
    finally:
        trainer.stop()
    rss = [r for r in measured if r is not None]
    assert len(rss) == 6, measured
    # Each trial's 40 MB is resident until its collection: kept, six trials would hold 240 MB.
    assert max(rss) - min(rss) < 100, rss
