"""Starting workers: local processes (``sweep run``) and Docker containers, one per GPU (``sweep workers``).

* :mod:`sweep.launcher.local`: N worker processes on this machine with live progress;
* :mod:`sweep.launcher.containers`: pure functions that build a ``WorkerSpec``;
* :mod:`sweep.launcher.labels`: how a worker container is named and found again (labels, ``WorkerInfo``);
* :mod:`sweep.launcher.docker_args`: the docker-py arguments of a ``WorkerSpec``;
* :mod:`sweep.launcher.gpus`: the GPU list (the one ``nvidia-smi`` parser, ``--gpus all|0,1``);
* :mod:`sweep.launcher.docker_engine`: the calls to the engine, each taking the client as a parameter;
* :mod:`sweep.launcher.cli`: the ``sweep workers up|ls|down`` command group.
"""

from __future__ import annotations

from sweep.launcher.containers import (
    CONTAINER_ARTIFACTS,
    WorkerSpec,
    build_cpu_worker_specs,
    build_worker_spec,
    build_worker_specs,
    parse_restart,
)
from sweep.launcher.docker_args import describe, host_config_kwargs, run_kwargs
from sweep.launcher.docker_engine import connect, down, ls, up
from sweep.launcher.gpus import NVIDIA_SMI_QUERY, GpuInfo, parse_gpus, parse_nvidia_smi, query_gpus
from sweep.launcher.labels import (
    LABEL_CPU,
    LABEL_FOLLOW,
    LABEL_GPU,
    LABEL_IMAGE,
    LABEL_ROLE,
    LABEL_STUDY,
    ROLE_WORKER,
    WorkerInfo,
    container_name,
)

__all__ = [
    "CONTAINER_ARTIFACTS",
    "LABEL_CPU",
    "LABEL_FOLLOW",
    "LABEL_GPU",
    "LABEL_IMAGE",
    "LABEL_ROLE",
    "LABEL_STUDY",
    "NVIDIA_SMI_QUERY",
    "ROLE_WORKER",
    "GpuInfo",
    "WorkerInfo",
    "WorkerSpec",
    "build_cpu_worker_specs",
    "build_worker_spec",
    "build_worker_specs",
    "connect",
    "container_name",
    "describe",
    "down",
    "host_config_kwargs",
    "ls",
    "parse_gpus",
    "parse_nvidia_smi",
    "parse_restart",
    "query_gpus",
    "run_kwargs",
    "up",
]
