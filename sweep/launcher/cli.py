"""Start, list and stop Docker worker containers, one per GPU (``sweep workers up|ls|down``).

``docker compose up --scale workers=N`` cannot do this: with a ``count: 1`` GPU reservation every
replica gets GPU 0 (NVIDIA/nvidia-container-toolkit#521). The launcher instead creates one
container per GPU id, each with its own ``DeviceRequest(device_ids=[id])``. ``--cpus N`` starts N
CPU-only workers instead (no device request, so no NVIDIA runtime needed).

This module is the command line only; the work is split over three modules so most of it can be
tested without a Docker engine:

* :mod:`sweep.launcher.containers`: pure functions that *build* a ``WorkerSpec`` and turn it into keyword
  arguments for ``client.containers.run`` (``run_kwargs``) and ``client.api.create_host_config``
  (``host_config_kwargs``);
* :mod:`sweep.launcher.gpus`: the GPU list (``nvidia-smi`` parsing, ``--gpus all|0,1``);
* :mod:`sweep.launcher.docker_engine`: the functions that *call* the engine (``connect``, ``up``, ``ls``,
  ``down``), each taking the Docker client as a parameter.

The storage URL may carry the database password. It goes into the container only as the
``SWEEP_STORAGE`` environment variable, never onto a command line, and every message or log line
shows it through :func:`sweep.masking.mask_url`.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from sweep.errors import LauncherError
from sweep.launcher.containers import build_cpu_worker_specs, build_worker_specs
from sweep.launcher.docker_engine import connect, down, ls, up
from sweep.launcher.gpus import parse_gpus, query_gpus
from sweep.masking import mask_url

__all__ = ["register_cli"]

_logger = logging.getLogger(__name__)


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

    p_up = actions.add_parser("up", help="start one worker container per GPU (or N CPU-only workers)")
    devices = p_up.add_mutually_exclusive_group(required=True)
    devices.add_argument("--gpus", help="'all' (from nvidia-smi) or ids, e.g. 0,2: one worker per GPU")
    devices.add_argument(
        "--cpus",
        type=int,
        metavar="N",
        help="N CPU-only workers: no GPU requested (image built with LOCK=cpu, e.g. regsweep-worker-cpu)",
    )
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
    if args.cpus is not None:
        build = lambda **kwargs: build_cpu_worker_specs(args.cpus, **kwargs)  # noqa: E731
    else:
        gpus = parse_gpus(args.gpus, available=query_gpus)  # looked up here, so tests can patch it
        build = lambda **kwargs: build_worker_specs(gpus, **kwargs)  # noqa: E731
    specs = build(
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
                  f"(storage {mask_url(specs[0].environment['SWEEP_STORAGE'])}):")
    for spec, name in zip(specs, names, strict=True):
        console.print(
            f"  {spec.device.upper() if spec.gpu is None else 'GPU ' + str(spec.gpu)}: {name}", highlight=False
        )
    return 0


def _cmd_ls(args: argparse.Namespace, client: Any = None) -> int:
    from rich.table import Table

    infos = ls(client or connect(), study=args.study)
    console = _console()
    if not infos:
        console.print("No regsweep worker containers.")
        return 0
    table = Table("name", "id", "status", "study", "device", "image")
    for info in infos:
        table.add_row(info.name, info.short_id, info.status, info.study, info.device, info.image)
    console.print(table)
    return 0


def _cmd_down(args: argparse.Namespace, client: Any = None) -> int:
    removed = down(client or connect(), study=args.study, timeout=args.timeout)
    console = _console()
    console.print(f"Removed {len(removed)} worker container(s)" + (": " + ", ".join(removed) if removed else "."),
                  highlight=False)
    return 0
