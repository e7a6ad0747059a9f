"""Studies in storage: create a sweep from a spec, load it back, build its sampler and pruner.

``create_sweep`` is safe when several processes create the same study at once (optuna#1092):
exactly one of them inserts the study row; only that one writes the budget, the grid and the
attrs, and it writes the ``spec`` attr *last*, so a study with a ``spec`` attr is complete.
The others see the existing study and wait for that attr.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
import warnings
from dataclasses import dataclass

import optuna

from sweep.errors import SpecError, StorageError, StudyNotFoundError
from sweep.masking import mask_url
from sweep.penalties.searchspace import grid_params
from sweep.spec.load import parse_spec
from sweep.spec.model import SweepSpec
from sweep.storage.engine import db_call, engine_of
from sweep.study import budget

__all__ = [
    "VERSION",
    "UNLIMITED",
    "Sweep",
    "create_sweep",
    "load_sweep",
    "spec_hash",
    "make_sampler",
    "make_pruner",
    "budget_total",
]

_logger = logging.getLogger(__name__)
VERSION = "0.1.0"
#: Budget of a sweep limited only by its deadline.
UNLIMITED = 2**31 - 1


@dataclass
class Sweep:
    """A study together with the spec it was created from."""

    study: optuna.Study
    spec: SweepSpec

    @property
    def name(self) -> str:
        """The study name."""
        return self.study.study_name


def spec_hash(spec: SweepSpec) -> str:
    """Stable hash of a spec's public content (storage URL excluded)."""
    text = json.dumps(spec.public_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def budget_total(spec: SweepSpec) -> int:
    """Trials the study may run: the spec's budget, the grid size for a grid, or unlimited."""
    if spec.budget.trials is not None:
        return spec.budget.trials
    if spec.sampler.name == "grid":
        return len(grid_params(spec.space))
    if spec.budget.deadline is not None:
        return UNLIMITED
    raise SpecError("Invalid budget: give budget.trials or budget.deadline, received neither")


def _note(spec: SweepSpec) -> str:
    lines = [f"# {spec.study.name}", "", "Created by regsweep. Spec:", "", "```json"]
    lines.append(json.dumps(spec.public_dict(), indent=2, sort_keys=True))
    lines.append("```")
    return "\n".join(lines)


def create_sweep(spec: SweepSpec, storage: optuna.storages.BaseStorage) -> tuple[Sweep, bool]:
    """Create the study for ``spec`` or return the existing one with the same spec.

    Args:
        spec: A validated spec (validation happens before this touches storage).
        storage: Opened storage (see :func:`sweep.storage.engine.open_storage`).

    Returns:
        The sweep and whether this call created it.

    Raises:
        SpecError: The study exists with a different spec.
        StorageError: The storage failed.
    """
    total = budget_total(spec)  # raises before anything is written
    name = spec.study.name
    try:
        study_id = db_call(
            lambda: storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], name),
            what=f"create study {name!r}",
        )
    except optuna.exceptions.DuplicatedStudyError:
        existing = load_sweep(storage, name)
        if spec_hash(existing.spec) != spec_hash(spec):
            raise SpecError(
                f"Invalid study.name: study {name!r} already exists with a different spec "
                f"(hash {spec_hash(existing.spec)} != {spec_hash(spec)}); choose another name"
            ) from None
        return existing, False
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        budget.ensure_budget(engine_of(storage), name, total)
        if spec.sampler.name == "grid":
            for params in grid_params(spec.space):
                db_call(functools.partial(study.enqueue_trial, params), what="enqueue a grid point")
        db_call(lambda: study.set_user_attr("regsweep_version", VERSION), what="write study attrs")
        with warnings.catch_warnings():  # set_metric_names is "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # optuna-dashboard shows this name instead of "Objective 0".
            db_call(lambda: study.set_metric_names([spec.objective.metric]), what="name the objective")
        # The trial budget's one home is the regsweep_budget row (budget.budget_of); not repeated here.
        db_call(
            lambda: study.set_user_attr(
                "budget",
                {
                    "deadline": spec.budget.deadline.isoformat() if spec.budget.deadline else None,
                    "trial_timeout_s": spec.budget.trial_timeout_s,
                },
            ),
            what="write study attrs",
        )
        _save_note(study, spec)
        # Written last: its presence tells everyone else the study is complete.
        db_call(lambda: study.set_user_attr("spec", spec.public_dict()), what="write the spec")
    except BaseException:
        _logger.error("Creating study %r failed; removing the partial study", name)
        try:
            storage.delete_study(study_id)
        except Exception:  # pragma: no cover - best effort on an already failing storage
            pass
        raise
    _logger.info("Created study %r (budget %d trials)", name, total)
    return Sweep(study=study, spec=spec), True


def _save_note(study: optuna.Study, spec: SweepSpec) -> None:
    # The note shows in optuna-dashboard's study page; failing to write it must not fail create.
    try:
        from optuna_dashboard import save_note

        db_call(lambda: save_note(study, _note(spec)), what="write the study note")
    except StorageError:
        raise
    except Exception as error:  # pragma: no cover
        _logger.warning("Could not write the dashboard note: %s", error)


def load_sweep(storage: optuna.storages.BaseStorage, name: str, *, wait_s: float = 30.0) -> Sweep:
    """Load a study and its spec.

    Args:
        storage: Opened storage.
        name: Study name.
        wait_s: How long to wait for a study that another process is still creating.

    Raises:
        StudyNotFoundError: No such study, or it has no regsweep spec.
    """
    try:
        study = db_call(lambda: optuna.load_study(study_name=name, storage=storage), what=f"load study {name!r}")
    except KeyError:
        url = getattr(storage, "url", None) or getattr(getattr(storage, "_backend", None), "url", "")
        names = sorted(s.study_name for s in db_call(storage.get_all_studies, what="list studies"))
        there = f"studies there: {', '.join(names)}" if names else "it holds no studies"
        raise StudyNotFoundError(f"Study {name!r} not found in {mask_url(str(url))} ({there})") from None
    deadline = time.monotonic() + wait_s
    while True:
        attrs = db_call(lambda: study.user_attrs, what=f"read attrs of study {name!r}")
        if "spec" in attrs:
            return Sweep(study=study, spec=parse_spec(attrs["spec"], source=f"study {name!r}"))
        if time.monotonic() > deadline:
            raise StudyNotFoundError(
                f"Study {name!r} has no regsweep spec (not created by `sweep create`, or creation failed)"
            )
        time.sleep(0.5)


def make_sampler(spec: SweepSpec, worker_index: int = 0, *, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The study's sampler for one worker.

    TPE runs multivariate and grouped (the space is conditional) with a constant liar so parallel
    workers do not all sample the same point. Workers get distinct seeds derived from the spec's.

    Args:
        spec: The sweep spec.
        worker_index: Index of this worker, to derive its seed.
        seed: This worker's seed, overriding the derivation (workers pass one unique per process,
            ``workers.parent.loop.sampler_seed``: indexes repeat across hosts and concurrent ``sweep run``s).
    """
    if seed is None:
        seed = None if spec.sampler.seed is None else spec.sampler.seed + 1000 * worker_index
    if spec.sampler.name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=spec.sampler.n_startup_trials,
            multivariate=True,
            group=True,
            constant_liar=True,
        )
    # "grid": every grid point is enqueued at create time; a budget beyond the grid samples randomly.
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    """The study's pruner; it sees validation accuracy once per epoch."""
    p = spec.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=p.n_warmup_steps)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource,
            max_resource=spec.training.epochs,
            reduction_factor=p.reduction_factor,
        )
    return optuna.pruners.NopPruner()

