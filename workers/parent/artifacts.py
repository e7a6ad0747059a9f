"""Per-trial artifacts in a FileSystemArtifactStore: plots for optuna-dashboard, and the per-epoch record.

The record (``trial-N-record.json``: ``{"curves": {...}, "diagnostics_by_epoch": [...]}``) holds
what grows with the epochs, out of the user attrs every sampler and the dashboard load; the
trial's ``record`` attr points to it and ``sweep report`` reads it back
(:mod:`sweep.report.data`).

The store is a directory shared by workers and the dashboard (a compose volume). Plots are drawn
with matplotlib's Agg backend in the worker parent just before the trial is told (Optuna cannot
attach artifacts to a finished trial), from the curves the trial already stored; a failing plot
is logged and never fails the trial.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from sweep.storage.trial_record import Attr

__all__ = ["CurveArtifacts", "DiagnosticArtifacts", "record_store_path", "upload_record"]

_logger = logging.getLogger(__name__)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display in a worker container
    import matplotlib.pyplot as plt

    return plt


def _upload_png(store: FileSystemArtifactStore, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                fig: Any, filename: str) -> str:
    """Save ``fig`` as ``filename`` and attach it to ``trial``; returns the artifact id."""
    plt = _pyplot()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        fig.savefig(path)
        plt.close(fig)
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                               storage=study._storage, mimetype="image/png")


def record_store_path(store: Any) -> str:
    """The store's directory as written in the ``record`` attr (absolute; "" if it has none)."""
    base = getattr(store, "_base_path", None)
    return os.path.abspath(base) if base is not None else ""


def upload_record(store: Any, study: optuna.Study, trial: optuna.Trial, record: dict[str, Any]) -> str:
    """Upload a trial's per-epoch record as ``trial-N-record.json``; returns the artifact id.

    Args:
        store: The artifact store.
        study: The study (its storage holds the artifact's metadata).
        trial: The running trial.
        record: ``{"curves": ..., "diagnostics_by_epoch": ...}`` (either may be missing).
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"trial-{trial.number}-record.json"
        path.write_text(json.dumps(record, separators=(",", ":")), encoding="utf-8")
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                               storage=study._storage, mimetype="application/json")


class CurveArtifacts:
    """Before-tell hook: uploads ``trial-N-curves.png`` for each trial with curves.

    Args:
        directory: Root of the artifact store (``SWEEP_ARTIFACTS``).
    """

    def __init__(self, directory: str) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.store = FileSystemArtifactStore(directory)
        self.__name__ = "CurveArtifacts"

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        curves = trial.user_attrs.get(Attr.CURVES) or {}
        if not curves.get("val_accuracy"):
            return
        plt = _pyplot()
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
        artifact_id = _upload_png(self.store, study, trial, fig, f"trial-{trial.number}-curves.png")
        _logger.debug("Trial %d: uploaded curves artifact %s", trial.number, artifact_id)


class DiagnosticArtifacts:
    """Before-tell hook: ``trial-N-diagnostics.png`` — per-block weight L2 norm, sparsity and mean
    activation magnitude over epochs (from the ``diagnostics_by_epoch`` attr).

    Args:
        store: The artifact store shared with :class:`CurveArtifacts`.
    """

    def __init__(self, store: FileSystemArtifactStore) -> None:
        self.store = store
        self.__name__ = "DiagnosticArtifacts"

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        epochs = trial.user_attrs.get(Attr.DIAGNOSTICS_BY_EPOCH) or []
        if not epochs:
            return
        import numpy as np

        plt = _pyplot()
        blocks = list(epochs[-1]["blocks"])
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=100)
        for ax, key, title in zip(axes, ("l2", "sparsity", "activation"),
                                  ("kernel L2 norm", "kernel sparsity (|w| < 1e-3)", "mean |activation|"), strict=True):
            grid = np.array([[e["blocks"].get(b, {}).get(key, np.nan) for e in epochs] for b in blocks], dtype=float)
            image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
            ax.set(title=title, xlabel="epoch", yticks=range(len(blocks)), yticklabels=blocks)
            ax.set_xticks(range(len(epochs)), [str(e["epoch"] + 1) for e in epochs])
            ax.tick_params(axis="y", labelsize=6)
            fig.colorbar(image, ax=ax, fraction=0.046)
        fig.suptitle(f"trial {trial.number}: regularizer diagnostics by block and epoch")
        fig.tight_layout()
        _upload_png(self.store, study, trial, fig, f"trial-{trial.number}-diagnostics.png")
