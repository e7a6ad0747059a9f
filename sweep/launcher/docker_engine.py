"""The Docker engine side of the launcher: connect, start, list and stop worker containers.

Each function takes the docker client as a parameter; engine failures become
:class:`~sweep.errors.LauncherError` with a message saying what to check.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sweep.errors import LauncherError
from sweep.launcher.containers import WorkerSpec
from sweep.launcher.docker_args import describe, run_kwargs
from sweep.launcher.labels import (
    LABEL_CPU,
    LABEL_FOLLOW,
    LABEL_GPU,
    LABEL_IMAGE,
    LABEL_ROLE,
    LABEL_STUDY,
    ROLE_WORKER,
    WorkerInfo,
)
from sweep.masking import mask_url

__all__ = ["connect", "up", "ls", "down"]

_logger = logging.getLogger("sweep.launcher")

# ----------------------------------------------------------------------------------------------
# Engine calls (each takes the client as a parameter)


def connect(factory: Callable[[], Any] | None = None) -> Any:
    """Connect to the Docker engine (``DOCKER_HOST`` or the local socket) and check it answers.

    Args:
        factory: Returns a ``docker.DockerClient``; defaults to ``docker.from_env``.

    Returns:
        The connected client.

    Raises:
        LauncherError: The engine is not reachable.
    """
    import docker
    import docker.errors

    try:
        client = (factory or docker.from_env)()
        client.ping()
    except docker.errors.DockerException as error:
        where = os.environ.get("DOCKER_HOST") or "the local Docker socket"
        raise LauncherError(
            f"Cannot reach the Docker engine at {where}: {error}. Is the Docker daemon running and "
            f"may this user use it (docker group, or DOCKER_HOST)?"
        ) from None
    return client


def _engine_error(action: str, error: Exception) -> LauncherError:
    text = str(error)
    hint = ""
    if "could not select device driver" in text or "nvidia-container" in text:
        hint = (" (install the NVIDIA Container Toolkit and restart dockerd, see docs/docker.md; "
                "or start CPU-only workers with --cpus N)")
    return LauncherError(f"Docker could not {action}: {text}{hint}")


def _find(client: Any, study: str | None = None, gpu: str | None = None, cpu: str | None = None) -> list[Any]:
    import docker.errors

    filters = [f"{LABEL_ROLE}={ROLE_WORKER}"]
    if study is not None:
        filters.append(f"{LABEL_STUDY}={study}")
    if gpu is not None:
        filters.append(f"{LABEL_GPU}={gpu}")
    if cpu is not None:
        filters.append(f"{LABEL_CPU}={cpu}")
    try:
        return list(client.containers.list(all=True, filters={"label": filters}))
    except docker.errors.DockerException as error:
        raise _engine_error("list worker containers", error) from None


def up(client: Any, specs: Iterable[WorkerSpec]) -> list[str]:
    """Start one container per spec. Idempotent: a running worker for the same study and GPU (or
    CPU slot) is kept; a stopped one is removed and replaced. A container that was created but
    could not start (e.g. no NVIDIA runtime for its GPU request) is removed again, so `ls` never
    lists a worker that never ran.

    Args:
        client: A ``docker.DockerClient``.
        specs: From :func:`build_worker_specs`.

    Returns:
        Names of the containers now running for these specs (started or kept).

    Raises:
        LauncherError: The engine refused (missing image, no NVIDIA runtime, name clash, ...).
    """
    import docker.errors

    names: list[str] = []
    for spec in specs:
        existing = [
            c for c in _find(client, study=spec.study, gpu=spec.gpu, cpu=spec.cpu)
            # a --follow worker and a --study worker of the same name are different workers
            if (c.labels or {}).get(LABEL_FOLLOW) == spec.labels.get(LABEL_FOLLOW)
        ]
        running = [c for c in existing if c.status in ("running", "restarting")]
        if running:
            _logger.info("Worker %s already runs study %s on %s; keeping it", running[0].name, spec.study, spec.device)
            names.append(running[0].name)
            continue
        try:
            for old in existing:
                _logger.info("Removing stopped worker %s (%s)", old.name, old.status)
                old.remove(force=True)
            _logger.info(
                "Starting worker %s: study %s, %s, storage %s: %s",
                spec.name, spec.study, spec.device, mask_url(spec.environment["SWEEP_STORAGE"]), describe(spec),
            )
            # create + start rather than run: when start fails, the `created` container is ours to remove.
            container = client.containers.create(**run_kwargs(spec))
        except docker.errors.ImageNotFound:
            raise LauncherError(
                f"Image {spec.image!r} not found locally or in its registry; build it with "
                f"docker build -f Dockerfile.gpu -t {spec.image} ."
            ) from None
        except docker.errors.DockerException as error:
            raise _engine_error(f"create worker {spec.name} on {spec.device}", error) from None
        try:
            container.start()
        except docker.errors.DockerException as error:
            try:
                container.remove(force=True)
            except docker.errors.DockerException as cleanup:  # report the start failure, not this
                _logger.warning("Could not remove the container %s that failed to start: %s", spec.name, cleanup)
            raise _engine_error(f"start worker {spec.name} on {spec.device}", error) from None
        names.append(container.name)
    return names


def ls(client: Any, study: str | None = None) -> list[WorkerInfo]:
    """List worker containers (any state) by their labels.

    Args:
        client: A ``docker.DockerClient``.
        study: Only this study's workers; None lists all regsweep workers.
    """
    infos = []
    for container in _find(client, study=study):
        labels = container.labels or {}
        infos.append(
            WorkerInfo(
                name=container.name,
                short_id=container.short_id,
                status=container.status,
                study=labels.get(LABEL_STUDY, ""),
                gpu=labels.get(LABEL_GPU, ""),
                image=labels.get(LABEL_IMAGE, ""),
                cpu=labels.get(LABEL_CPU, ""),
            )
        )
    return sorted(infos, key=lambda info: (info.study, info.gpu, info.cpu, info.name))


def down(client: Any, study: str | None = None, timeout: int = 60) -> list[str]:
    """Stop and remove worker containers, all at once: each may take up to ``timeout`` seconds to
    hand its trial back, and N of them one after another took N times that.

    Args:
        client: A ``docker.DockerClient``.
        study: Only this study's workers; None stops every regsweep worker.
        timeout: Seconds between SIGTERM and SIGKILL; the worker uses them to hand its running
            trial back to the study.

    Returns:
        Names of the removed containers.

    Raises:
        LauncherError: The engine refused.
    """
    import docker.errors

    def stop(container: Any) -> LauncherError | None:
        try:
            _logger.info("Stopping worker %s (%s)", container.name, container.status)
            if container.status in ("running", "restarting"):
                container.stop(timeout=timeout)
            container.remove(force=True)
        except docker.errors.NotFound:  # removed concurrently (e.g. by another `down`)
            pass
        except docker.errors.DockerException as error:
            return _engine_error(f"stop worker {container.name}", error)
        return None

    containers = _find(client, study=study)
    if not containers:
        return []
    with ThreadPoolExecutor(max_workers=min(len(containers), 32), thread_name_prefix="regsweep-down") as pool:
        errors = list(pool.map(stop, containers))
    failed = [error for error in errors if error is not None]
    if failed:
        raise failed[0]
    return [container.name for container in containers]
