"""The worker's training child across trials: a trial whose epoch callback fails in the worker
(e.g. the storage refuses a report) must not leave the child mid-conversation for the next trial.
A real spawned child running the synthetic trainer."""

from __future__ import annotations

from typing import Any

import pytest

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
