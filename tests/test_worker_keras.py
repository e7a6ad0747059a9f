"""Real workers training the real bottleneck classifier (tiny) on real Postgres."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from sweep.study.budget import counts_toward_budget
from tests.helpers import BIN, run_cli, worker_env, write_spec

TINY = """
[study]
name = "{name}"
[space.kernel]
kinds = ["none", "l1", "l2"]
l1 = {{ low = 1e-5, high = 1e-3 }}
l2 = {{ low = 1e-5, high = 1e-3 }}
[space.activity]
kinds = ["none", "l2"]
l2 = {{ low = 1e-7, high = 1e-5 }}
[training]
dataset = "digits"
input_size = 32
width = 0.25
epochs = 3
batch_size = 32
optimizer = "sgd"
learning_rate = 0.05
[sampler]
name = "random"
seed = 7
[pruner]
name = "median"
n_warmup_steps = 1
[budget]
trials = 6
trial_timeout_s = 600
"""


@pytest.mark.slow
def test_two_keras_workers_finish_a_six_trial_study(pg_url: str, study_name: str, tmp_path: Path) -> None:
    run_cli(
        "create", str(write_spec(tmp_path / "tiny.toml", TINY.format(name=study_name))), "--storage", pg_url, check=True
    )
    env = worker_env(pg_url, study_name)
    artifacts = tmp_path / "artifacts"
    procs = [subprocess.Popen([str(BIN / "sweep-worker"), "--worker-index", str(i), "--artifacts", str(artifacts),
                               "--keep-models"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    study = optuna.load_study(study_name=study_name, storage=pg_url)
    trials = study.get_trials()
    # Reused duplicates (dedup_of) train nothing and take no slot: 6 trained trials count.
    assert sum(counts_toward_budget(t.state, t.user_attrs) for t in trials) == 6
    trials = [t for t in trials if t.user_attrs.get("dedup_of") is None]
    assert len(trials) == 6
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert max(t.value for t in trials if t.value is not None) > 0.3  # 10 classes: chance is 0.1
    sizes = []
    for t in trials:
        # The per-epoch record (curves, diagnostics by epoch) is the artifact the `record` attr names;
        # the attrs every sampler and the dashboard load stay small (issue 16).
        sizes.append(len(json.dumps(t.user_attrs)))
        assert sizes[-1] <= 4096, (t.number, sizes[-1])
        record = json.loads((artifacts / t.user_attrs["record"]["artifact_id"]).read_text())
        curves, epochs = record["curves"], t.user_attrs["epochs_run"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "reg_loss", "epoch_seconds", "images_per_second"):
            assert len(curves[key]) == epochs, key
        regularized = (
            t.user_attrs["config"]["kernel"]["kind"] != "none" or t.user_attrs["config"]["activity"]["kind"] != "none"
        )
        assert (min(curves["reg_loss"]) > 0) == regularized
        diag = t.user_attrs["diagnostics"]
        config = t.user_attrs["config"]
        assert diag["placement_layers"] == {  # conv bias off: the bias placement could reach only the head
            "kernel": 53 if config["kernel"]["kind"] != "none" else 0,
            "bias": 0,
            "activity": 18 if config["activity"]["kind"] != "none" else 0,
        }
        by_epoch = record["diagnostics_by_epoch"]
        assert [d["epoch"] for d in by_epoch] == list(range(epochs))
        assert {"l1", "l2", "sparsity", "activation"} <= set(by_epoch[-1]["blocks"]["block_3"])
        assert t.user_attrs["worker"]["versions"]["keras"].startswith("3.")
        names = sorted(m.filename for m in get_all_artifact_meta(t, storage=study._storage))
        assert f"trial-{t.number}-curves.png" in names and f"trial-{t.number}-diagnostics.png" in names
        assert not [n for n in names if "checkpoint" in n]  # deleted when the trial ended
        assert (f"trial-{t.number}-model.keras" in names) == (t.state == TrialState.COMPLETE)
    print(f"\n[keras attrs] bytes per trial: {sorted(sizes)}")
    # What a user reads in a worker log: regsweep's lines, not TensorFlow's C++ logging or warnings.
    noise = [line for output in outputs for line in output.splitlines()
             if re.match(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+", line) or "cuInit" in line or "absl::InitializeLog" in line
             or "ExperimentalWarning" in line]
    assert not noise, noise[:20]
