"""Worker containers as data: one :class:`WorkerSpec` per GPU (or per CPU-only worker); the
docker-py keyword arguments built from it are :mod:`sweep.launcher.docker_args` (no engine needed).

The storage URL goes into the container only as ``SWEEP_STORAGE``, never onto a command line,
and every message shows it through :func:`sweep.masking.mask_url`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sweep.errors import LauncherError
from sweep.launcher.gpus import _GPU_ID
from sweep.launcher.labels import (
    LABEL_CPU,
    LABEL_FOLLOW,
    LABEL_GPU,
    LABEL_IMAGE,
    LABEL_ROLE,
    LABEL_STUDY,
    ROLE_WORKER,
    container_name,
)
from sweep.masking import mask_url

__all__ = [
    "CONTAINER_ARTIFACTS",
    "WorkerSpec",
    "parse_restart",
    "build_worker_spec",
    "build_worker_specs",
    "build_cpu_worker_specs",
]

_logger = logging.getLogger("sweep.launcher")


#: Where the artifact store is mounted inside a worker (Dockerfile.gpu's SWEEP_ARTIFACTS).
CONTAINER_ARTIFACTS = "/artifacts"


# Storage hosts that mean "this machine": inside a container they mean the container itself.
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class WorkerSpec:
    """Everything needed to start one worker container; built without touching the engine.

    Args:
        name: Container name.
        image: Worker image (built from Dockerfile.gpu).
        study: Optuna study the worker joins.
        gpu: GPU id given to the container (index or UUID); None for a CPU-only worker.
        environment: Container environment; holds the unmasked storage URL.
        labels: ``regsweep.*`` labels used by :func:`ls` and :func:`down` to find it again.
        restart_policy: Docker restart policy dict (``{"Name": ..., "MaximumRetryCount": ...}``).
        artifacts: Host path or volume name mounted at :data:`CONTAINER_ARTIFACTS` (or None).
        network: Docker network to join (e.g. the compose project's network), or None.
        command: Arguments after the image's ENTRYPOINT (``sweep-worker``); never secrets.
        cpu: Slot 0..N-1 of a CPU-only worker (no GPU requested); None for a GPU worker.
    """

    name: str
    image: str
    study: str
    gpu: str | None
    environment: dict[str, str]
    labels: dict[str, str]
    restart_policy: dict[str, Any]
    artifacts: str | None = None
    network: str | None = None
    command: tuple[str, ...] = field(default_factory=tuple)
    cpu: str | None = None

    @property
    def device(self) -> str:
        """``gpu N`` or ``cpu N``, for messages."""
        return f"gpu {self.gpu}" if self.gpu is not None else f"cpu {self.cpu}"


def parse_restart(value: str) -> dict[str, Any]:
    """Turn ``--restart`` into a Docker restart policy.

    Only ``no`` and ``on-failure[:N]`` are accepted: a worker exits 0 when the study's budget or
    deadline is reached, and ``always``/``unless-stopped`` would restart it into another
    immediate exit, forever.

    Args:
        value: ``no``, ``on-failure`` or ``on-failure:N`` (N = maximum retries, 0 = unlimited).

    Returns:
        ``{"Name": ..., "MaximumRetryCount": N}`` as docker-py's HostConfig expects.

    Raises:
        LauncherError: Any other value.
    """
    name, _, count = value.strip().partition(":")
    if name == "no" and not count:
        return {"Name": "no", "MaximumRetryCount": 0}
    if name == "on-failure" and (not count or count.isdigit()):
        return {"Name": "on-failure", "MaximumRetryCount": int(count or 0)}
    raise LauncherError(
        f"Invalid --restart: expected 'no', 'on-failure' or 'on-failure:N' (workers exit 0 when the "
        f"budget is spent, so always/unless-stopped would restart them forever), received --restart={value!r}"
    )


def _check_storage(storage: str, network: str | None) -> None:
    """Reject storage URLs a container cannot use; warn about ones that probably won't work."""
    from sqlalchemy.engine import make_url  # lazy, like sweep.storage.engine

    try:
        url = make_url(storage)
    except Exception:
        raise LauncherError(
            f"Invalid --storage: expected a database URL such as postgresql+psycopg2://user@host/db, "
            f"received {mask_url(storage)!r}"
        ) from None
    if url.get_backend_name() == "sqlite":
        raise LauncherError(
            f"Invalid --storage for containers: a SQLite file is private to each container; use "
            f"PostgreSQL, received {mask_url(storage)!r}"
        )
    if (url.host or "localhost") in _LOOPBACK and network != "host":
        _logger.warning(
            "Storage %s points at %s, which inside a container is the container itself; use the "
            "database's host name/IP, or --network host",
            mask_url(storage), url.host or "localhost (unix socket)",
        )


def build_worker_spec(
    *,
    gpu: str | None,
    image: str,
    study: str,
    storage: str,
    name_prefix: str = "regsweep",
    restart: str = "on-failure",
    artifacts: str | None = "regsweep-artifacts",
    network: str | None = None,
    worker_index: int = 0,
    follow: bool = False,
    extra_env: dict[str, str] | None = None,
    cpu: int | None = None,
) -> WorkerSpec:
    """Build the spec of the worker container for one GPU, or a CPU-only one (no engine involved).

    Args:
        gpu: GPU id (index or UUID) the container gets, and only that one; None for a CPU-only
            worker (then ``cpu`` is its slot).
        image: Worker image, e.g. ``regsweep-worker:latest``.
        study: Study name (also a label and part of the container name).
        storage: Storage URL; put into the environment as ``SWEEP_STORAGE``, never on the command line.
        name_prefix: Container name prefix.
        restart: ``no`` | ``on-failure`` | ``on-failure:N`` (see :func:`parse_restart`).
        artifacts: Volume name or absolute host path for the artifact store; None mounts nothing.
        network: Docker network to attach to (e.g. ``regsweep_default``), or None for the default.
        worker_index: Position among the workers started together; becomes
            ``SWEEP_WORKER_INDEX`` so each worker seeds its sampler differently (identical seeds
            would make every worker propose the same configs).
        follow: Treat ``study`` as a prefix: the worker runs ``--follow PREFIX`` and works on the
            newest open ``PREFIX-YYYY-MM-DD`` study (the nightly ones ``sweep schedule`` creates).
        extra_env: More environment variables (must not override ``SWEEP_STORAGE``/``SWEEP_STUDY``).
        cpu: Slot (0, 1, ...) of a CPU-only worker: no GPU is requested, so no NVIDIA runtime
            is needed, and ``CUDA_VISIBLE_DEVICES=-1`` hides any GPU from it.

    Returns:
        The :class:`WorkerSpec`.

    Raises:
        LauncherError: Bad GPU id, restart policy, image, study or storage.
    """
    _check_worker_args(gpu, cpu, image, study)
    _check_storage(storage, network)
    policy = parse_restart(restart)
    environment = _worker_environment(
        extra_env, storage=storage, study=study, gpu=gpu, worker_index=worker_index, follow=follow,
        artifacts=artifacts,
    )
    slot = None if cpu is None else str(cpu)
    return WorkerSpec(
        name=container_name(name_prefix, f"{study}-follow" if follow else study, gpu, slot),
        image=image,
        study=study,
        gpu=gpu,
        environment=environment,
        labels=_worker_labels(study, image, gpu, slot, follow),
        restart_policy=policy,
        artifacts=artifacts,
        network=network,
        # Study only: visible in `docker ps`, and the storage URL stays in the environment.
        command=("--follow", study) if follow else ("--study", study),
        cpu=slot,
    )


def _check_worker_args(gpu: str | None, cpu: int | None, image: str, study: str) -> None:
    if (gpu is None) == (cpu is None):
        raise LauncherError(f"A worker needs a GPU id or a CPU slot, not both or neither: gpu={gpu!r}, cpu={cpu!r}")
    if gpu is not None and not _GPU_ID.match(gpu):
        raise LauncherError(f"Invalid GPU id: expected an index or GPU UUID, received gpu={gpu!r}")
    if not image.strip():
        raise LauncherError("Invalid --image: expected an image reference, received --image=''")
    if not study.strip():
        raise LauncherError("Invalid --study: expected a study name, received --study=''")


def _worker_environment(
    extra_env: dict[str, str] | None, *, storage: str, study: str, gpu: str | None, worker_index: int,
    follow: bool, artifacts: str | None,
) -> dict[str, str]:
    """The container's environment: ``extra_env`` plus what the arguments set (the storage URL among them)."""
    environment = dict(extra_env or {})
    clash = {"SWEEP_STORAGE", "SWEEP_STUDY", "SWEEP_WORKER_INDEX", "SWEEP_REQUIRE_GPU"} & environment.keys()
    if clash:
        raise LauncherError(f"extra_env must not set {', '.join(sorted(clash))}; they come from the arguments")
    environment.update({"SWEEP_STORAGE": storage, "SWEEP_WORKER_INDEX": str(worker_index)})
    # A GPU worker that finds no usable GPU must exit before claiming a trial, not train on CPU.
    environment["SWEEP_REQUIRE_GPU"] = "1" if gpu is not None else "0"
    if gpu is None:
        environment.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    if not follow:  # a SWEEP_STUDY would win over --follow in sweep-worker
        environment["SWEEP_STUDY"] = study
    if artifacts is not None:
        environment.setdefault("SWEEP_ARTIFACTS", CONTAINER_ARTIFACTS)
    return environment


def _worker_labels(study: str, image: str, gpu: str | None, slot: str | None, follow: bool) -> dict[str, str]:
    """The ``regsweep.*`` labels that ``sweep workers ls|down`` find the container by."""
    labels = {
        LABEL_ROLE: ROLE_WORKER,
        LABEL_STUDY: study,
        **({LABEL_GPU: gpu} if gpu is not None else {LABEL_CPU: str(slot)}),
        LABEL_IMAGE: image,
    }
    if follow:
        labels[LABEL_FOLLOW] = "true"
    return labels


def build_worker_specs(gpus: Sequence[str], **kwargs: Any) -> list[WorkerSpec]:
    """One :class:`WorkerSpec` per GPU id, worker indices 0, 1, ... in order.

    Args:
        gpus: GPU ids from :func:`parse_gpus`.
        **kwargs: Passed to :func:`build_worker_spec` (everything but ``gpu`` and ``worker_index``).
    """
    return [build_worker_spec(gpu=gpu, worker_index=i, **kwargs) for i, gpu in enumerate(gpus)]


def build_cpu_worker_specs(count: int, **kwargs: Any) -> list[WorkerSpec]:
    """``count`` CPU-only :class:`WorkerSpec` (slots and worker indices 0, 1, ...): no GPU request.

    Args:
        count: How many workers (``--cpus N``), at least 1.
        **kwargs: Passed to :func:`build_worker_spec` (everything but ``gpu``, ``cpu`` and ``worker_index``).

    Raises:
        LauncherError: ``count`` below 1.
    """
    if count < 1:
        raise LauncherError(f"Invalid --cpus: expected a number of CPU workers >= 1, received --cpus={count}")
    return [build_worker_spec(gpu=None, cpu=i, worker_index=i, **kwargs) for i in range(count)]
