"""Contract test: the `workers` service of docker-compose.yml, run as a plain process.

Takes the image's ENTRYPOINT and ENV from Dockerfile.gpu and the service's command and
environment from docker-compose.yml (interpolated with .env.example, like `docker compose
config`), points SWEEP_STORAGE at the local Postgres instead of the `postgres` service, creates
the study with the project's own `sweep create` and runs exactly that command line. If a flag,
an environment variable name or the entry point drifts between the container files and the
code, this fails here instead of in a GPU container at night.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest

from sweep.study.budget import counts_toward_budget
from tests.test_docker_files import (
    DOCKERFILE,
    as_argv,
    build_target,
    environment_dict,
    image_entrypoint,
    image_env,
    parse_dockerfile,
    resolved_compose,
)

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]

# Two trials of a real (tiny) Keras model: the worker image's code path, in seconds on a CPU.
TINY_SPEC = """
[study]
name = "placeholder"  # replaced by `sweep create --name`

[space.kernel]
kinds = ["none", "l2"]
l2 = {{ low = 1e-5, high = 1e-3 }}

[training]
dataset = "digits"
input_size = 32  # the bottleneck model needs sides >= 31
width = 0.25
epochs = 1
batch_size = 64
limit = 128
optimizer = "sgd"
learning_rate = 0.05
seed = 0

[sampler]
name = "random"
seed = 0

[budget]
trials = {trials}
trial_timeout_s = 300
"""

TRIALS = 2


def _clean_env() -> dict[str, str]:
    """This process's environment without anything that could steer the worker elsewhere."""
    return {
        k: v for k, v in os.environ.items()
        if not k.startswith("SWEEP_") and k not in ("OPTUNA_STORAGE", "CUDA_VISIBLE_DEVICES")
    }


def _run(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_workers_service_command_runs_a_study_to_its_budget(pg_url: str, tmp_path: Path) -> None:
    study = f"t-compose-workers-{uuid.uuid4().hex[:10]}"
    compose = resolved_compose({"SWEEP_STUDY": study})
    service = compose["services"]["workers"]
    target = build_target(service, parse_dockerfile(DOCKERFILE))

    # What the container would run: ENTRYPOINT + command (compose's entrypoint wins if set).
    argv = as_argv(service.get("entrypoint")) or image_entrypoint(target)
    argv = argv + as_argv(service.get("command"))
    assert argv[0] == "sweep-worker", argv
    # ...and with which environment: image ENV, overridden by the service's environment.
    container_env = {**image_env(target), **environment_dict(service)}
    assert container_env["SWEEP_STUDY"] == study
    assert re.search(r"@pgbouncer:6432/", container_env["SWEEP_STORAGE"]), container_env["SWEEP_STORAGE"]

    # The only substitutions: local Postgres for the `postgres` service, local paths for the
    # container's volume and /tmp.
    heartbeat = tmp_path / "heartbeat"
    artifacts = tmp_path / "artifacts"
    container_env.update(
        SWEEP_STORAGE=pg_url,
        SWEEP_ARTIFACTS=str(artifacts),
        SWEEP_HEARTBEAT_FILE=str(heartbeat),
        # No GPU here: the GPU requirement itself is what the test below checks.
        SWEEP_REQUIRE_GPU="0",
    )
    env = {**_clean_env(), **container_env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC.format(trials=TRIALS), encoding="utf-8")
    created = _run([str(BIN / "sweep"), "create", str(spec), "--name", study], env, timeout=120)
    assert created.returncode == 0, f"sweep create failed:\n{created.stdout}\n{created.stderr}"

    started = time.monotonic()
    try:
        worker = _run([str(BIN / argv[0]), *argv[1:]], env, timeout=600)
        elapsed = time.monotonic() - started
        assert worker.returncode == 0, (
            f"{' '.join(argv)} exited {worker.returncode} after {elapsed:.0f}s:\n"
            f"{worker.stdout[-3000:]}\n{worker.stderr[-5000:]}"
        )
        loaded = optuna.load_study(study_name=study, storage=pg_url)
        states = [t.state for t in loaded.trials]
        finished = [s for s in states if s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
        reasons = [t.user_attrs.get("fail_reason") for t in loaded.trials if t.state == optuna.trial.TrialState.FAIL]
        # The random sampler (a fresh seed per worker process) may propose a config that already
        # ran: it is reused, COMPLETE and not counted (sweep.study.budget.counts_toward_budget).
        counted = [t for t in loaded.trials if counts_toward_budget(t.state, t.user_attrs)]
        extra = [t for t in loaded.trials if t.number not in {c.number for c in counted}]
        assert len(finished) == len(states) and len(counted) == TRIALS, f"trial states: {states}, failures: {reasons}"
        assert all(t.user_attrs.get("dedup_of") is not None for t in extra), [t.user_attrs for t in extra]
        # The healthcheck's input exists: the worker touched the heartbeat file it was given.
        assert heartbeat.is_file(), "the worker never touched SWEEP_HEARTBEAT_FILE"
    finally:
        try:
            optuna.delete_study(study_name=study, storage=pg_url)
        except Exception:  # noqa: BLE001 - cleanup only; the assertion above is what matters
            pass


# A driver that answers while the framework cannot use the GPU (the broken-CUDA case): an
# nvidia-smi that lists one GPU, in front of this machine's real, GPU-less TensorFlow.
FAKE_NVIDIA_SMI = "#!/bin/sh\necho '0, NVIDIA H100 80GB HBM3'\n"


@pytest.mark.parametrize(
    ("driver", "reason"),
    [("none", "nvidia-smi not found"), ("unusable", "tensorflow finds no GPU although nvidia-smi lists one")],
)
def test_gpu_worker_without_a_gpu_exits_before_claiming_a_trial(
    pg_url: str, tmp_path: Path, driver: str, reason: str
) -> None:
    """The GPU `workers` service, on this GPU-less machine: exit 3 naming the reason, study untouched.

    Before SWEEP_REQUIRE_GPU, it trained the whole budget on CPU and looked healthy.
    """
    from sweep.storage.engine import engine_of, open_storage
    from sweep.study.budget import budget_state

    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA driver: the GPU check would (rightly) pass here")
    study = f"t-compose-nogpu-{uuid.uuid4().hex[:10]}"
    service = resolved_compose({"SWEEP_STUDY": study})["services"]["workers"]
    target = build_target(service, parse_dockerfile(DOCKERFILE))
    argv = (as_argv(service.get("entrypoint")) or image_entrypoint(target)) + as_argv(service.get("command"))
    container_env = {**image_env(target), **environment_dict(service)}
    assert container_env.get("SWEEP_REQUIRE_GPU") == "1", "the GPU services must require their GPU"
    heartbeat = tmp_path / "heartbeat"
    container_env.update(
        SWEEP_STORAGE=pg_url, SWEEP_ARTIFACTS=str(tmp_path / "artifacts"), SWEEP_HEARTBEAT_FILE=str(heartbeat)
    )
    path = f"{BIN}{os.pathsep}/usr/bin:/bin"
    if driver == "unusable":
        fake = tmp_path / "driver"
        fake.mkdir()
        (fake / "nvidia-smi").write_text(FAKE_NVIDIA_SMI, encoding="utf-8")
        (fake / "nvidia-smi").chmod(0o755)
        path = f"{fake}{os.pathsep}{path}"
    env = {**_clean_env(), **container_env, "PATH": path}
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC.format(trials=TRIALS), encoding="utf-8")
    created = _run([str(BIN / "sweep"), "create", str(spec), "--name", study], env, timeout=120)
    assert created.returncode == 0, created.stderr
    try:
        worker = _run([str(BIN / argv[0]), *argv[1:]], env, timeout=300)
        assert worker.returncode == 3, f"exit {worker.returncode}:\n{worker.stdout[-2000:]}\n{worker.stderr[-3000:]}"
        assert "a GPU is required" in worker.stderr and reason in worker.stderr, worker.stderr
        storage = open_storage(pg_url)
        state = budget_state(engine_of(storage), study)
        assert state is not None and (state.claimed, state.settled) == (0, 0), state
        assert optuna.load_study(study_name=study, storage=pg_url).trials == []
        assert not heartbeat.exists(), "an unusable worker must never look alive to the healthcheck"
    finally:
        try:
            optuna.delete_study(study_name=study, storage=pg_url)
        except Exception:  # noqa: BLE001 - cleanup only
            pass
