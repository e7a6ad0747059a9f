"""Start, list and stop Docker worker containers, one per GPU (``sweep workers up|ls|down``).

``docker compose up --scale workers=N`` cannot do this: with a ``count: 1`` GPU reservation every
replica gets GPU 0 (NVIDIA/nvidia-container-toolkit#521). The launcher instead creates one
container per GPU id, each with its own ``DeviceRequest(device_ids=[id])``.

The module is split in two so it can be tested without a Docker engine:

* pure functions that *build* a :class:`WorkerSpec` and turn it into keyword arguments for
  ``client.containers.run`` (:func:`run_kwargs`) and ``client.api.create_host_config``
  (:func:`host_config_kwargs`), plus the GPU-list parsing;
* functions that *call* the engine (:func:`connect`, :func:`up`, :func:`ls`, :func:`down`), each
  taking the Docker client as a parameter.

The storage URL may carry the database password. It goes into the container only as the
``SWEEP_STORAGE`` environment variable, never onto a command line, and every message or log line
shows it through :func:`sweep.storage.mask_url`.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sweep.errors import LauncherError

__all__ = [
    "LABEL_ROLE",
    "LABEL_STUDY",
    "LABEL_GPU",
    "LABEL_IMAGE",
    "LABEL_FOLLOW",
    "ROLE_WORKER",
    "CONTAINER_ARTIFACTS",
    "GpuInfo",
    "WorkerSpec",
    "WorkerInfo",
    "parse_nvidia_smi",
    "query_gpus",
    "parse_gpus",
    "parse_restart",
    "container_name",
    "build_worker_spec",
    "build_worker_specs",
    "run_kwargs",
    "host_config_kwargs",
    "describe",
    "connect",
    "up",
    "ls",
    "down",
    "register_cli",
]

_logger = logging.getLogger(__name__)

LABEL_ROLE = "regsweep.role"
LABEL_STUDY = "regsweep.study"
LABEL_GPU = "regsweep.gpu"
LABEL_IMAGE = "regsweep.image"
LABEL_FOLLOW = "regsweep.follow"
ROLE_WORKER = "worker"

#: Where the artifact store is mounted inside a worker (Dockerfile.gpu's SWEEP_ARTIFACTS).
CONTAINER_ARTIFACTS = "/artifacts"

NVIDIA_SMI_QUERY = ("nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader")

# A GPU as Docker's --gpus device=... accepts it: an index, or a GPU/MIG UUID.
_GPU_ID = re.compile(r"^(\d+|GPU-[0-9a-fA-F-]+|MIG-[0-9a-zA-Z/-]+)$")
# Docker container names: [a-zA-Z0-9][a-zA-Z0-9_.-]+
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")
# Storage hosts that mean "this machine": inside a container they mean the container itself.
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class GpuInfo:
    """One GPU of the Docker host as nvidia-smi reports it.

    Args:
        index: nvidia-smi's index (a string, as Docker's device_ids want it).
        name: The product name, e.g. ``NVIDIA H100 80GB HBM3``.
    """

    index: str
    name: str


@dataclass(frozen=True)
class WorkerSpec:
    """Everything needed to start one worker container; built without touching the engine.

    Args:
        name: Container name.
        image: Worker image (built from Dockerfile.gpu).
        study: Optuna study the worker joins.
        gpu: GPU id given to the container (index or UUID).
        environment: Container environment; holds the unmasked storage URL.
        labels: ``regsweep.*`` labels used by :func:`ls` and :func:`down` to find it again.
        restart_policy: Docker restart policy dict (``{"Name": ..., "MaximumRetryCount": ...}``).
        artifacts: Host path or volume name mounted at :data:`CONTAINER_ARTIFACTS` (or None).
        network: Docker network to join (e.g. the compose project's network), or None.
        command: Arguments after the image's ENTRYPOINT (``sweep-worker``); never secrets.
    """

    name: str
    image: str
    study: str
    gpu: str
    environment: dict[str, str]
    labels: dict[str, str]
    restart_policy: dict[str, Any]
    artifacts: str | None = None
    network: str | None = None
    command: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class WorkerInfo:
    """A worker container found by its labels.

    Args:
        name: Container name.
        short_id: Short container id.
        status: Docker status (``running``, ``exited``, ...).
        study: Value of the study label.
        gpu: Value of the GPU label.
        image: Image the worker was started from.
    """

    name: str
    short_id: str
    status: str
    study: str
    gpu: str
    image: str


# ----------------------------------------------------------------------------------------------
# Pure functions: parsing and spec building


def parse_nvidia_smi(output: str) -> list[GpuInfo]:
    """Parse ``nvidia-smi --query-gpu=index,name --format=csv,noheader`` output.

    Args:
        output: The command's stdout, one ``index, name`` line per GPU.

    Returns:
        The GPUs in the order listed.

    Raises:
        LauncherError: A line is not ``index, name`` with a numeric index.
    """
    gpus: list[GpuInfo] = []
    for line in output.splitlines():
        if not line.strip():
            continue
        index, sep, name = line.partition(",")
        index = index.strip()
        if not sep or not index.isdigit():
            raise LauncherError(
                f"Cannot parse nvidia-smi output: expected 'index, name' per line, received {line!r}"
            )
        gpus.append(GpuInfo(index=index, name=name.strip()))
    return gpus


def query_gpus(runner: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> list[GpuInfo]:
    """List the GPUs of this machine with nvidia-smi.

    This is the machine the launcher runs on: it must be the Docker host (with a remote
    DOCKER_HOST, pass explicit ids to ``--gpus`` instead of ``all``).

    Args:
        runner: ``subprocess.run``-compatible callable (a fake in tests).

    Returns:
        The GPUs nvidia-smi reports (possibly empty).

    Raises:
        LauncherError: nvidia-smi is missing or fails.
    """
    try:
        result = runner(list(NVIDIA_SMI_QUERY), capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        raise LauncherError(
            "--gpus all needs nvidia-smi to list the GPUs, but nvidia-smi was not found; pass "
            "explicit ids, e.g. --gpus 0,1"
        ) from None
    except subprocess.TimeoutExpired:
        raise LauncherError("nvidia-smi did not answer within 30 s; pass explicit ids, e.g. --gpus 0,1") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip().splitlines()
        raise LauncherError(
            f"nvidia-smi failed with exit status {result.returncode}: "
            f"{detail[0] if detail else 'no output'}; pass explicit ids, e.g. --gpus 0,1"
        )
    return parse_nvidia_smi(result.stdout)


def parse_gpus(value: str, available: Callable[[], list[GpuInfo]] | None = query_gpus) -> list[str]:
    """Turn a ``--gpus`` value into the list of GPU ids to start one worker each on.

    Args:
        value: ``all`` or a comma-separated list of indices / GPU UUIDs, e.g. ``0,2``.
        available: Returns the host's GPUs (nvidia-smi). Required for ``all``; for explicit ids it
            is used, when it works, to reject ids the host does not have. None skips that check.

    Returns:
        GPU ids as strings, in the given order.

    Raises:
        LauncherError: Empty, malformed, duplicate or unknown ids, or ``all`` with no GPU found.
    """
    text = value.strip()
    if text.lower() == "all":
        if available is None:
            raise LauncherError("--gpus all needs nvidia-smi to list the GPUs; pass explicit ids, e.g. --gpus 0,1")
        gpus = available()
        if not gpus:
            raise LauncherError("--gpus all: nvidia-smi lists no GPU on this host; pass explicit ids, e.g. --gpus 0,1")
        return [gpu.index for gpu in gpus]
    if not text:
        raise LauncherError("Invalid --gpus: expected 'all' or ids like 0,2, received --gpus=''")
    ids = [part.strip() for part in text.split(",")]
    for gpu_id in ids:
        if not _GPU_ID.match(gpu_id):
            raise LauncherError(
                f"Invalid --gpus: expected 'all' or comma-separated GPU indices/UUIDs like 0,2, "
                f"received {gpu_id!r} in --gpus={value!r}"
            )
    duplicates = sorted({g for g in ids if ids.count(g) > 1})
    if duplicates:
        raise LauncherError(
            f"Invalid --gpus: each GPU at most once (two workers would share it), received "
            f"{', '.join(duplicates)} twice in --gpus={value!r}"
        )
    if available is not None:
        try:
            known = available()
        except LauncherError as error:  # no nvidia-smi here (e.g. remote engine): trust the flag
            _logger.debug("Not checking --gpus against nvidia-smi: %s", error)
        else:
            indices = {gpu.index for gpu in known}
            unknown = [g for g in ids if g.isdigit() and g not in indices]
            if unknown:
                raise LauncherError(
                    f"Invalid --gpus: this host has GPUs {', '.join(sorted(indices, key=int)) or 'none'}, "
                    f"received {', '.join(unknown)} in --gpus={value!r}"
                )
    return ids


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


def container_name(prefix: str, study: str, gpu: str) -> str:
    """Name of the worker container for ``study`` on ``gpu``, e.g. ``regsweep-quick-gpu0``.

    Args:
        prefix: The ``--name-prefix``.
        study: Study name.
        gpu: GPU id (a UUID is shortened to its first 8 hex digits).
    """
    gpu_part = gpu if gpu.isdigit() else gpu.split("-", 1)[-1].replace("-", "")[:8]
    name = _NAME_UNSAFE.sub("-", f"{prefix}-{study}-gpu{gpu_part}").strip("-._")
    if not name or not name[0].isalnum():
        raise LauncherError(f"Invalid --name-prefix: container names must start with a letter or digit, received {prefix!r}")
    return name


def _mask(url: str) -> str:
    from sweep.storage import mask_url  # lazy: sweep.storage imports optuna/sqlalchemy

    return mask_url(url)


def _check_storage(storage: str, network: str | None) -> None:
    """Reject storage URLs a container cannot use; warn about ones that probably won't work."""
    from sqlalchemy.engine import make_url  # lazy, like sweep.storage

    try:
        url = make_url(storage)
    except Exception:
        raise LauncherError(
            f"Invalid --storage: expected a database URL such as postgresql+psycopg2://user@host/db, "
            f"received {_mask(storage)!r}"
        ) from None
    if url.get_backend_name() == "sqlite":
        raise LauncherError(
            f"Invalid --storage for containers: a SQLite file is private to each container; use "
            f"PostgreSQL, received {_mask(storage)!r}"
        )
    if (url.host or "localhost") in _LOOPBACK and network != "host":
        _logger.warning(
            "Storage %s points at %s, which inside a container is the container itself; use the "
            "database's host name/IP, or --network host",
            _mask(storage), url.host or "localhost (unix socket)",
        )


def build_worker_spec(
    *,
    gpu: str,
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
) -> WorkerSpec:
    """Build the spec of the worker container for one GPU (no engine involved).

    Args:
        gpu: GPU id (index or UUID) the container gets, and only that one.
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

    Returns:
        The :class:`WorkerSpec`.

    Raises:
        LauncherError: Bad GPU id, restart policy, image, study or storage.
    """
    if not _GPU_ID.match(gpu):
        raise LauncherError(f"Invalid GPU id: expected an index or GPU UUID, received gpu={gpu!r}")
    if not image.strip():
        raise LauncherError("Invalid --image: expected an image reference, received --image=''")
    if not study.strip():
        raise LauncherError("Invalid --study: expected a study name, received --study=''")
    _check_storage(storage, network)
    policy = parse_restart(restart)
    environment = dict(extra_env or {})
    clash = {"SWEEP_STORAGE", "SWEEP_STUDY", "SWEEP_WORKER_INDEX"} & environment.keys()
    if clash:
        raise LauncherError(f"extra_env must not set {', '.join(sorted(clash))}; they come from the arguments")
    environment.update({"SWEEP_STORAGE": storage, "SWEEP_WORKER_INDEX": str(worker_index)})
    if not follow:  # a SWEEP_STUDY would win over --follow in sweep-worker
        environment["SWEEP_STUDY"] = study
    if artifacts is not None:
        environment.setdefault("SWEEP_ARTIFACTS", CONTAINER_ARTIFACTS)
    labels = {
        LABEL_ROLE: ROLE_WORKER,
        LABEL_STUDY: study,
        LABEL_GPU: gpu,
        LABEL_IMAGE: image,
    }
    if follow:
        labels[LABEL_FOLLOW] = "true"
    return WorkerSpec(
        name=container_name(name_prefix, f"{study}-follow" if follow else study, gpu),
        image=image,
        study=study,
        gpu=gpu,
        environment=environment,
        labels=labels,
        restart_policy=policy,
        artifacts=artifacts,
        network=network,
        # Study only: visible in `docker ps`, and the storage URL stays in the environment.
        command=("--follow", study) if follow else ("--study", study),
    )


def build_worker_specs(gpus: Sequence[str], **kwargs: Any) -> list[WorkerSpec]:
    """One :class:`WorkerSpec` per GPU id, worker indices 0, 1, ... in order.

    Args:
        gpus: GPU ids from :func:`parse_gpus`.
        **kwargs: Passed to :func:`build_worker_spec` (everything but ``gpu`` and ``worker_index``).
    """
    return [build_worker_spec(gpu=gpu, worker_index=i, **kwargs) for i, gpu in enumerate(gpus)]


def _device_requests(spec: WorkerSpec) -> list[Any]:
    import docker.types  # local: keeps `import sweep.launcher` cheap

    # capabilities [["gpu"]]: what `docker run --gpus device=N` sends; the NVIDIA runtime
    # then exposes exactly this GPU (NVIDIA_VISIBLE_DEVICES=N) inside the container.
    return [docker.types.DeviceRequest(device_ids=[spec.gpu], capabilities=[["gpu"]])]


def _binds(spec: WorkerSpec) -> dict[str, dict[str, str]]:
    if spec.artifacts is None:
        return {}
    return {spec.artifacts: {"bind": CONTAINER_ARTIFACTS, "mode": "rw"}}


def run_kwargs(spec: WorkerSpec) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.run(**run_kwargs(spec))``.

    Args:
        spec: The worker spec.
    """
    kwargs: dict[str, Any] = {
        "image": spec.image,
        "command": list(spec.command),
        "name": spec.name,
        "detach": True,
        "environment": dict(spec.environment),
        "labels": dict(spec.labels),
        "device_requests": _device_requests(spec),
        "restart_policy": dict(spec.restart_policy),
        # tini as PID 1: reaps training children of crashed trials and forwards SIGTERM.
        "init": True,
        "log_config": {"Type": "json-file", "Config": {"max-size": "20m", "max-file": "5"}},
    }
    binds = _binds(spec)
    if binds:
        kwargs["volumes"] = binds
    if spec.network:
        kwargs["network"] = spec.network
    return kwargs


def host_config_kwargs(spec: WorkerSpec) -> dict[str, Any]:
    """Keyword arguments for ``client.api.create_host_config(**host_config_kwargs(spec))``.

    The same host settings as :func:`run_kwargs`, in the low-level API's names.

    Args:
        spec: The worker spec.
    """
    kwargs: dict[str, Any] = {
        "device_requests": _device_requests(spec),
        "restart_policy": dict(spec.restart_policy),
        "init": True,
        "log_config": {"Type": "json-file", "Config": {"max-size": "20m", "max-file": "5"}},
    }
    binds = _binds(spec)
    if binds:
        kwargs["binds"] = binds
    if spec.network:
        kwargs["network_mode"] = spec.network
    return kwargs


def describe(spec: WorkerSpec) -> str:
    """An equivalent ``docker run`` command line, safe to print or log.

    ``SWEEP_STORAGE`` appears as ``-e SWEEP_STORAGE`` without a value (docker then takes it from
    the caller's environment), so the line never contains the password.

    Args:
        spec: The worker spec.
    """
    policy = spec.restart_policy["Name"]
    if policy == "on-failure" and spec.restart_policy.get("MaximumRetryCount"):
        policy += f":{spec.restart_policy['MaximumRetryCount']}"
    args = ["docker", "run", "-d", "--init", "--name", spec.name, "--gpus", f'"device={spec.gpu}"', "--restart", policy]
    for key, value in spec.labels.items():
        args += ["--label", f"{key}={value}"]
    for key, value in spec.environment.items():
        args += ["-e", key if key == "SWEEP_STORAGE" else f"{key}={value}"]
    if spec.artifacts is not None:
        args += ["-v", f"{spec.artifacts}:{CONTAINER_ARTIFACTS}"]
    if spec.network:
        args += ["--network", spec.network]
    args += [spec.image, *spec.command]
    return shlex.join(args)


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
        hint = " (install the NVIDIA Container Toolkit and restart dockerd; see docs/docker.md)"
    return LauncherError(f"Docker could not {action}: {text}{hint}")


def _find(client: Any, study: str | None = None, gpu: str | None = None) -> list[Any]:
    import docker.errors

    filters = [f"{LABEL_ROLE}={ROLE_WORKER}"]
    if study is not None:
        filters.append(f"{LABEL_STUDY}={study}")
    if gpu is not None:
        filters.append(f"{LABEL_GPU}={gpu}")
    try:
        return list(client.containers.list(all=True, filters={"label": filters}))
    except docker.errors.DockerException as error:
        raise _engine_error("list worker containers", error) from None


def up(client: Any, specs: Iterable[WorkerSpec]) -> list[str]:
    """Start one container per spec. Idempotent: a running worker for the same study and GPU is
    kept; a stopped one is removed and replaced.

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
            c for c in _find(client, study=spec.study, gpu=spec.gpu)
            # a --follow worker and a --study worker of the same name are different workers
            if (c.labels or {}).get(LABEL_FOLLOW) == spec.labels.get(LABEL_FOLLOW)
        ]
        running = [c for c in existing if c.status in ("running", "restarting")]
        if running:
            _logger.info("Worker %s already runs study %s on GPU %s; keeping it", running[0].name, spec.study, spec.gpu)
            names.append(running[0].name)
            continue
        try:
            for old in existing:
                _logger.info("Removing stopped worker %s (%s)", old.name, old.status)
                old.remove(force=True)
            _logger.info(
                "Starting worker %s: study %s, GPU %s, storage %s: %s",
                spec.name, spec.study, spec.gpu, _mask(spec.environment["SWEEP_STORAGE"]), describe(spec),
            )
            container = client.containers.run(**run_kwargs(spec))
        except docker.errors.ImageNotFound:
            raise LauncherError(
                f"Image {spec.image!r} not found locally or in its registry; build it with "
                f"docker build -f Dockerfile.gpu -t {spec.image} ."
            ) from None
        except docker.errors.DockerException as error:
            raise _engine_error(f"start worker {spec.name} on GPU {spec.gpu}", error) from None
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
            )
        )
    return sorted(infos, key=lambda info: (info.study, info.gpu, info.name))


def down(client: Any, study: str | None = None, timeout: int = 60) -> list[str]:
    """Stop and remove worker containers.

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

    removed = []
    for container in _find(client, study=study):
        try:
            _logger.info("Stopping worker %s (%s)", container.name, container.status)
            if container.status in ("running", "restarting"):
                container.stop(timeout=timeout)
            container.remove(force=True)
        except docker.errors.NotFound:  # removed concurrently (e.g. by another `down`)
            pass
        except docker.errors.DockerException as error:
            raise _engine_error(f"stop worker {container.name}", error) from None
        removed.append(container.name)
    return removed


# ----------------------------------------------------------------------------------------------
# CLI: `sweep workers up|ls|down`


def register_cli(subparsers: Any) -> None:
    """Add the ``workers`` command group (``up``, ``ls``, ``down``) to an argparse subparsers object.

    Each leaf parser sets ``handler`` (what ``sweep.cli.main`` calls) to a function taking the
    parsed ``argparse.Namespace`` and returning the exit status.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.
    """
    workers = subparsers.add_parser(
        "workers",
        help="start/list/stop Docker worker containers, one per GPU",
        description="Manage Docker worker containers: one container per GPU, found again by labels.",
    )
    actions = workers.add_subparsers(dest="workers_command", metavar="{up,ls,down}")
    actions.required = True

    p_up = actions.add_parser("up", help="start one worker container per GPU")
    p_up.add_argument("--gpus", required=True, help="'all' (from nvidia-smi) or ids, e.g. 0,2")
    p_up.add_argument("--image", required=True, help="worker image built from Dockerfile.gpu")
    target = p_up.add_mutually_exclusive_group()
    target.add_argument("--study", default=None, help="study name (default: $SWEEP_STUDY)")
    target.add_argument("--follow", default=None, metavar="PREFIX",
                        help="follow the nightly studies PREFIX-YYYY-MM-DD that `sweep schedule` creates")
    p_up.add_argument("--storage", default=None,
                      help="storage URL as the containers see it (default: $SWEEP_STORAGE, then $OPTUNA_STORAGE); "
                           "prefer the environment variable: flags are visible in `ps`")
    p_up.add_argument("--name-prefix", default="regsweep", help="container name prefix (default: regsweep)")
    p_up.add_argument("--restart", default="on-failure", help="no | on-failure[:N] (default: on-failure)")
    p_up.add_argument("--artifacts", default="regsweep-artifacts",
                      help="volume name or absolute host path mounted at /artifacts (default: regsweep-artifacts)")
    p_up.add_argument("--network", default=None,
                      help="Docker network to join, e.g. regsweep_default to reach the compose postgres")
    p_up.set_defaults(handler=_cmd_up)

    p_ls = actions.add_parser("ls", help="list worker containers")
    p_ls.add_argument("--study", default=None, help="only this study's workers")
    p_ls.set_defaults(handler=_cmd_ls)

    p_down = actions.add_parser("down", help="stop and remove worker containers")
    p_down.add_argument("--study", default=None, help="only this study's workers (default: all regsweep workers)")
    p_down.add_argument("--timeout", type=int, default=60, help="seconds before SIGKILL (default: 60)")
    p_down.set_defaults(handler=_cmd_down)


def _storage_from(args: argparse.Namespace) -> str:
    storage = args.storage or os.environ.get("SWEEP_STORAGE") or os.environ.get("OPTUNA_STORAGE")
    if not storage:
        raise LauncherError(
            "No storage URL: set SWEEP_STORAGE (preferred; flags show up in `ps`) or pass --storage, "
            "e.g. postgresql+psycopg2://regsweep:PASSWORD@db-host:5432/regsweep"
        )
    return storage


def _study_from(args: argparse.Namespace) -> str:
    study = args.study or os.environ.get("SWEEP_STUDY")
    if not study:
        raise LauncherError("No study name: pass --study NAME or set SWEEP_STUDY")
    return study


def _console() -> Any:
    from rich.console import Console

    return Console()


def _cmd_up(args: argparse.Namespace, client: Any = None) -> int:
    study = args.follow or _study_from(args)
    gpus = parse_gpus(args.gpus)
    specs = build_worker_specs(
        gpus,
        image=args.image,
        study=study,
        storage=_storage_from(args),
        name_prefix=args.name_prefix,
        restart=args.restart,
        artifacts=args.artifacts or None,
        network=args.network,
        follow=bool(args.follow),
    )
    names = up(client or connect(), specs)
    console = _console()
    what = f"studies [bold]{study}-*[/bold]" if args.follow else f"study [bold]{study}[/bold]"
    console.print(f"[bold]{len(names)}[/bold] worker(s) for {what} "
                  f"(storage {_mask(specs[0].environment['SWEEP_STORAGE'])}):")
    for spec, name in zip(specs, names):
        console.print(f"  GPU {spec.gpu}: {name}", highlight=False)
    return 0


def _cmd_ls(args: argparse.Namespace, client: Any = None) -> int:
    from rich.table import Table

    infos = ls(client or connect(), study=args.study)
    console = _console()
    if not infos:
        console.print("No regsweep worker containers.")
        return 0
    table = Table("name", "id", "status", "study", "gpu", "image")
    for info in infos:
        table.add_row(info.name, info.short_id, info.status, info.study, info.gpu, info.image)
    console.print(table)
    return 0


def _cmd_down(args: argparse.Namespace, client: Any = None) -> int:
    removed = down(client or connect(), study=args.study, timeout=args.timeout)
    console = _console()
    console.print(f"Removed {len(removed)} worker container(s)" + (": " + ", ".join(removed) if removed else "."),
                  highlight=False)
    return 0
