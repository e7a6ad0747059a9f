"""Predict how long the next trial will take, so no trial starts that cannot finish by the deadline.

The prediction is the median wall time of trials that ran all their epochs on the same GPU type
(falling back to any device, then to per-epoch time scaled to the full epoch count). Medians keep
one slow outlier (a cold cache, a busy host) from blocking the last hour of a night.
"""

from __future__ import annotations

import statistics

import optuna
from optuna.trial import TrialState

__all__ = ["predict_duration"]


def predict_duration(study: optuna.Study, gpu: str, epochs: int) -> float:
    """Seconds the next trial is expected to take on ``gpu`` (0.0 when nothing is known yet).

    Args:
        study: The study whose finished trials are the evidence.
        gpu: This worker's GPU name (``"cpu"`` without one).
        epochs: Epochs a trial trains.
    """
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    same, other, per_epoch = [], [], []
    for t in trials:
        duration = t.user_attrs.get("duration_s")
        ran = t.user_attrs.get("epochs_run")
        if not duration or not ran:
            continue
        on_same = t.user_attrs.get("worker", {}).get("gpu") == gpu
        if ran >= epochs:
            (same if on_same else other).append(float(duration))
        elif on_same:
            per_epoch.append(float(duration) / ran)
    if same:
        return statistics.median(same)
    if per_epoch:
        return statistics.median(per_epoch) * epochs
    if other:
        return statistics.median(other)
    return 0.0
