"""Per-trial artifacts for optuna-dashboard: a learning-curve PNG in a FileSystemArtifactStore.

The store is a directory shared by workers and the dashboard (a compose volume). Plots are drawn
with matplotlib's Agg backend in the worker parent, after the trial is told, from the curves the
trial already stored, so a failing plot can never lose a result.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

__all__ = ["CurveArtifacts"]

_logger = logging.getLogger(__name__)


class CurveArtifacts:
    """After-trial hook: uploads ``trial-N-curves.png`` for each trial with curves.

    Args:
        directory: Root of the artifact store (``SWEEP_ARTIFACTS``).
    """

    def __init__(self, directory: str) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.store = FileSystemArtifactStore(directory)
        self.__name__ = "CurveArtifacts"

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        curves = trial.user_attrs.get("curves") or {}
        if not curves.get("val_accuracy"):
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (acc, reg) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
        epochs = range(1, len(curves["val_accuracy"]) + 1)
        acc.plot(epochs, curves.get("accuracy", []), label="train")
        acc.plot(epochs, curves["val_accuracy"], label="validation")
        acc.set(title="accuracy", xlabel="epoch", ylim=(0, 1))
        acc.legend()
        reg.plot(epochs, curves.get("reg_loss", []), color="tab:red")
        reg.set(title="regularization loss", xlabel="epoch")
        fig.suptitle(f"trial {trial.number}: {trial.user_attrs.get('config_hash', '')}")
        fig.tight_layout()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"trial-{trial.number}-curves.png"
            fig.savefig(path)
            plt.close(fig)
            artifact_id = upload_artifact(
                artifact_store=self.store,
                file_path=str(path),
                study_or_trial=trial,
                storage=study._storage,
                mimetype="image/png",
            )
        _logger.debug("Trial %d: uploaded curves artifact %s", trial.number, artifact_id)
