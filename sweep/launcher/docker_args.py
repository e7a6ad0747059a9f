"""The docker-py keyword arguments of a :class:`~sweep.launcher.containers.WorkerSpec`: for
``client.containers.run`` (:func:`run_kwargs`) and ``client.api.create_host_config``
(:func:`host_config_kwargs`), built without an engine so tests check them against docker-py itself.
"""

from __future__ import annotations

import shlex
from typing import Any

from sweep.launcher.containers import CONTAINER_ARTIFACTS, WorkerSpec

__all__ = ["describe", "host_config_kwargs", "run_kwargs"]


def _device_requests(spec: WorkerSpec) -> list[Any]:
    import docker.types  # local: keeps `import sweep.launcher.cli` cheap

    if spec.gpu is None:  # CPU-only: requesting no device needs no NVIDIA runtime
        return []
    # capabilities [["gpu"]]: what `docker run --gpus device=N` sends; the NVIDIA runtime
    # then exposes exactly this GPU (NVIDIA_VISIBLE_DEVICES=N) inside the container.
    return [docker.types.DeviceRequest(device_ids=[spec.gpu], capabilities=[["gpu"]])]


def _binds(spec: WorkerSpec) -> dict[str, dict[str, str]]:
    if spec.artifacts is None:
        return {}
    return {spec.artifacts: {"bind": CONTAINER_ARTIFACTS, "mode": "rw"}}


def _host_settings(spec: WorkerSpec) -> dict[str, Any]:
    """Host settings shared by the high-level (containers.run) and low-level (host config) APIs."""
    return {
        "device_requests": _device_requests(spec),
        "restart_policy": dict(spec.restart_policy),
        # tini as PID 1: reaps training children of crashed trials and forwards SIGTERM.
        "init": True,
        "log_config": {"Type": "json-file", "Config": {"max-size": "20m", "max-file": "5"}},
    }


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
        **_host_settings(spec),
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
    kwargs: dict[str, Any] = _host_settings(spec)
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
    args = ["docker", "run", "-d", "--init", "--name", spec.name]
    if spec.gpu is not None:
        args += ["--gpus", f'"device={spec.gpu}"']
    args += ["--restart", policy]
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
