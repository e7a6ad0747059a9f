"""The default trainer on real (tiny) Keras runs: digits at 32x32, width 0.25, CPU."""

from __future__ import annotations

import json
import math
import os
import re

import keras
import pytest

from sweep.errors import TrialDiverged, TrialError
from workers.child.train import METRIC_KEYS, TrainRequest, train

SETUP = {
    "dataset": "digits", "input_size": 32, "width": 0.25, "bn_momentum": 0.9, "epochs": 3,
    "batch_size": 32, "optimizer": "sgd", "learning_rate": 0.05, "seed": 0,
}
NONE = {"kernel": {"kind": "none"}, "bias": {"kind": "none"}, "activity": {"kind": "none"}}
STRONG_L1 = {"kernel": {"kind": "l1", "l1": 1e-2}, "bias": {"kind": "none"}, "activity": {"kind": "none"}}


class Recorder:
    """An ``on_epoch`` that records its calls and answers from a script."""

    def __init__(self, answers: dict[int, str] | None = None) -> None:
        self.calls: list[dict] = []
        self.answers = answers or {}

    def __call__(self, metrics: dict) -> str:
        self.calls.append(metrics)
        return self.answers.get(metrics["epoch"], "continue")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """No regularization, 3 epochs on all training digits, checkpointing each epoch."""
    path = str(tmp_path_factory.mktemp("ckpt") / "trial.keras")
    recorder = Recorder()
    result = train(TrainRequest(config=NONE, setup=SETUP, seed=1, checkpoint_path=path), recorder)
    return result, recorder, path


@pytest.fixture(scope="module")
def strong_l1():
    """Strong kernel L1, pruned after the second of three epochs."""
    recorder = Recorder({1: "prune"})
    return train(TrainRequest(config=STRONG_L1, setup=SETUP, seed=1), recorder), recorder


@pytest.mark.slow
def test_history_has_every_key_finite_and_on_epoch_each_epoch(baseline):
    result, recorder, _ = baseline
    assert json.loads(json.dumps(result)) == result  # JSON-able as the contract requires
    assert result["epochs_run"] == 3 and result["stopped"] is None
    assert set(result["history"]) == set(METRIC_KEYS)
    assert all(len(values) == 3 and all(math.isfinite(v) for v in values) for values in result["history"].values())
    assert [call["epoch"] for call in recorder.calls] == [0, 1, 2]
    assert [call["loss"] for call in recorder.calls] == result["history"]["loss"]
    assert all(call["images_per_second"] > 0 and call["epoch_seconds"] > 0 for call in recorder.calls)
    assert result["history"]["reg_loss"] == [0.0, 0.0, 0.0]
    assert result["placement_layers"] == {"kernel": 0, "bias": 0, "activity": 0}
    assert set(result["block_norms"]) == {"stem", "head", "logits"} | {f"block_{i}" for i in range(17)}
    assert result["param_count"] > 0 and result["device"] and result["backend"] == keras.backend.backend()


@pytest.mark.slow
def test_learns_digits_well_above_chance(baseline):
    result, _, _ = baseline
    # 10 balanced classes: chance is 0.1.
    assert max(result["history"]["val_accuracy"]) > 0.4
    assert result["history"]["loss"][-1] < result["history"]["loss"][0]


@pytest.mark.slow
def test_prune_stops_training_early(strong_l1):
    result, recorder = strong_l1
    assert result["stopped"] == "prune" and result["epochs_run"] == 2
    assert [call["epoch"] for call in recorder.calls] == [0, 1]
    assert result["history"]["epoch"] == [0, 1]


@pytest.mark.slow
def test_strong_l1_makes_kernels_sparser_and_reg_loss_matches_norms(baseline, strong_l1):
    result, _ = strong_l1
    assert result["placement_layers"] == {"kernel": 53, "bias": 0, "activity": 0}
    assert result["sparsity"] > 2 * baseline[0]["sparsity"]
    # reg_loss after the last epoch is l1 * sum|w| over exactly the kernels block_norms covers.
    l1_total = sum(block["l1"] for block in result["block_norms"].values())
    assert result["history"]["reg_loss"][-1] == pytest.approx(1e-2 * l1_total, rel=1e-4)
    assert result["history"]["reg_loss"][1] < result["history"]["reg_loss"][0]


@pytest.mark.slow
def test_absurd_learning_rate_raises_trial_diverged():
    recorder = Recorder()
    # BatchNorm makes every conv scale-invariant: 1e12 only gives a finite loss of ~1e15.
    # 1e30 makes the logits overflow, and inf - inf in the cross-entropy is NaN.
    setup = {**SETUP, "learning_rate": 1e30, "limit": 128, "epochs": 2}
    with pytest.raises(TrialDiverged, match=r"diverged at epoch (\d+): loss=") as info:
        train(TrainRequest(config=NONE, setup=setup, seed=1), recorder)
    # The diverged epoch is never reported as a result.
    assert len(recorder.calls) == int(re.search(r"epoch (\d+)", str(info.value)).group(1))


@pytest.mark.slow
def test_checkpoint_then_resume_continues_from_initial_epoch(baseline):
    first, _, path = baseline
    assert os.listdir(os.path.dirname(path)) == ["trial.keras"]  # atomic: no temp file left behind
    saved = keras.models.load_model(path)
    steps_per_epoch = math.ceil(len(_train_size_probe()) / SETUP["batch_size"])
    assert int(saved.optimizer.iterations) == 3 * steps_per_epoch  # optimizer state is in the file
    recorder = Recorder()
    request = TrainRequest(config=NONE, setup={**SETUP, "epochs": 4}, seed=1, checkpoint_path=path,
                           resume_path=path, initial_epoch=3)
    result = train(request, recorder)
    assert result["epochs_run"] == 4 and result["history"]["epoch"] == [3]
    assert [call["epoch"] for call in recorder.calls] == [3]
    # Continuing from trained weights, not from scratch: far below the first epoch's loss.
    assert result["history"]["loss"][0] < 0.7 * first["history"]["loss"][0]
    assert int(keras.models.load_model(path).optimizer.iterations) == 4 * steps_per_epoch


def _train_size_probe():
    from workers.child.data import load_dataset

    return load_dataset("digits", image_size=8, seed=SETUP["seed"]).y_train


@pytest.mark.slow
def test_steps_per_epoch_cycles_through_the_images():
    """64 images, batch 16, 10 steps per epoch: each epoch is 2.5 passes, 160 images, 10 optimizer steps."""
    setup = {**SETUP, "epochs": 2, "limit": 64, "batch_size": 16, "steps_per_epoch": 10}
    recorder = Recorder()
    result = train(TrainRequest(config=NONE, setup=setup, seed=1), recorder)
    assert result["optimizer_steps"] == 20
    for call in recorder.calls:
        assert call["images_per_second"] * call["epoch_seconds"] == pytest.approx(160)
    plain = train(TrainRequest(config=NONE, setup={**setup, "steps_per_epoch": None}, seed=1), Recorder())
    assert plain["optimizer_steps"] == 2 * 4  # one pass: 64 / 16
    # With more steps per call than an epoch's 10, an epoch is still 10 steps (a divisor is used:
    # Keras would round the epoch up to 16).
    fused = train(TrainRequest(config=NONE, setup={**setup, "steps_per_execution": 16}, seed=1), Recorder())
    assert fused["optimizer_steps"] == 20
    message = r"^Invalid training.steps_per_epoch: expected an int >= 1, received steps_per_epoch=0$"
    with pytest.raises(TrialError, match=message):
        train(TrainRequest(config=NONE, setup={**setup, "steps_per_epoch": 0}, seed=1), Recorder())


def test_invalid_setup_fails_the_trial_before_training():
    with pytest.raises(TrialError, match="Invalid training.optimizer: expected one of .*received optimizer='rmsprop'"):
        train(TrainRequest(config=NONE, setup={**SETUP, "optimizer": "rmsprop"}), Recorder())
    with pytest.raises(TrialError, match=r"^Invalid training.steps_per_execution: expected an int >= 1, "
                                         r"received steps_per_execution=0$"):
        train(TrainRequest(config=NONE, setup={**SETUP, "steps_per_execution": 0}), Recorder())
    with pytest.raises(TrialError, match="Invalid kernel.l2"):
        train(TrainRequest(config={"kernel": {"kind": "l2", "l2": -1.0}}, setup=SETUP), Recorder())


@pytest.mark.slow
def test_larger_validation_batches_give_the_same_validation_numbers(monkeypatch):
    """Validation runs in batches of VAL_BATCH_FACTOR x batch_size (fewer steps): with an activity
    penalty too, the validation accuracy is the same and the loss equal up to float rounding."""
    import workers.child.train as trainer

    config = {"kernel": {"kind": "l2", "l2": 1e-3}, "bias": {"kind": "none"},
              "activity": {"kind": "l1", "l1": 1e-4}}
    setup = {**SETUP, "epochs": 1, "limit": 600}
    runs = {}
    for factor in (1, trainer.VAL_BATCH_FACTOR):
        monkeypatch.setattr(trainer, "VAL_BATCH_FACTOR", factor)
        runs[factor] = train(TrainRequest(config=config, setup=setup, seed=1), Recorder())["history"]
    small, large = runs[1], runs[trainer.VAL_BATCH_FACTOR]
    assert trainer.VAL_BATCH_FACTOR > 1
    assert small["loss"] == large["loss"]  # training itself is untouched
    assert small["val_accuracy"] == large["val_accuracy"]
    assert small["val_loss"] == pytest.approx(large["val_loss"], rel=1e-5)


@pytest.mark.slow
def test_steps_per_execution_trains_the_same_steps_to_the_same_numbers():
    """Several optimizer steps per call into the compiled function change the speed only: the same
    step count (an epoch's last call runs fewer than 16) and the same curves up to float rounding."""
    setup = {**SETUP, "epochs": 2, "limit": 600}
    runs = {spe: train(TrainRequest(config=STRONG_L1, setup={**setup, "steps_per_execution": spe}, seed=1),
                       Recorder())
            for spe in (1, 16)}
    one, many = runs[1], runs[16]
    steps = one["optimizer_steps"] // 2
    assert many["optimizer_steps"] == one["optimizer_steps"] and steps % 16 != 0  # a short last call
    for key in ("loss", "reg_loss", "val_loss", "val_accuracy"):
        assert many["history"][key] == pytest.approx(one["history"][key], rel=1e-4), key
