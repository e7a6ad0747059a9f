"""docs/docker.md's CPU path against a real engine: one compose stack, shared by these tests in order.

build (the docs' commands) -> `--profile cpu up -d` -> healthy -> SIGSTOP: unhealthy, SIGCONT:
healthy -> `docker compose stop` mid-trial / `start`: the trial resumes from its checkpoint ->
the sweep finishes (every trial COMPLETE or PRUNED, budget exact, read through the published
port) -> the dashboard serves /api/studies and an artifact -> a GPU-requiring worker exits
before claiming anything -> `sweep workers up --cpus/ls/down` -> scheduler + worker-nightly run a
short night and write its report. Sharing the stack is honest here: each step is what a user
does next on the same deployment, and each test checks its own outcome.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tests.docker.support import Checkout, docs_block, free_host_ports, wait_for

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "docker.md"
STUDY = "docker-cpu"
NIGHT_PREFIX = "dnight"
TRIALS = 3
EPOCHS = 3

# Small enough for 2 CPU cores (a few seconds an epoch), big enough to stop a trial mid-way.
# Only continuous lambdas: no two trials share a config, so none is a reused duplicate (which
# completes at once, copying its twin's curve) and the trial stopped mid-way really trains.
SPEC = """
[study]
name = "{name}"

[space.kernel]
kinds = ["l1", "l2"]
l1 = {{ low = 1e-6, high = 1e-4 }}
l2 = {{ low = 1e-5, high = 1e-3 }}

[training]
dataset = "digits"
input_size = 32
width = 0.25
epochs = {epochs}
batch_size = 64
limit = 192
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

# The scheduler profile's worker-nightly reserves a GPU and runs the GPU image; on this GPU-less
# machine the test swaps in the CPU image, through COMPOSE_FILE in .env (what a user would do).
NIGHTLY_CPU_OVERRIDE = """
services:
  worker-nightly:
    image: regsweep-worker-cpu:${REGSWEEP_TAG:-latest}
    build: !reset null
    deploy: !reset {}
    environment:
      CUDA_VISIBLE_DEVICES: "-1"
      SWEEP_REQUIRE_GPU: "0"
"""


def _storage(checkout: Checkout) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(checkout.host_storage())


def _trials(checkout: Checkout, study: str = STUDY) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=_storage(checkout)).get_trials(deepcopy=False)


def _budget(checkout: Checkout, study: str = STUDY) -> Any:
    from sweep.storage.engine import engine_of
    from sweep.study.budget import budget_state

    return budget_state(engine_of(_storage(checkout)), study)


def _worker_pid(checkout: Checkout, container: str) -> int:
    """Host PID of sweep-worker itself (the child of the container's tini)."""
    init_pid = checkout.inspect(container)["State"]["Pid"]
    rows = checkout.run(["docker", "top", container, "-eo", "pid,ppid,args"]).stdout.splitlines()[1:]
    children = [int(r.split()[0]) for r in rows if int(r.split()[1]) == init_pid]
    assert len(children) == 1, f"expected one child of tini ({init_pid}) in {rows}"
    return children[0]


@pytest.fixture(scope="module")
def stack(checkout: Checkout) -> Iterator[Checkout]:
    """docs/docker.md sections 2 and 2b, run as written, with .env edited for this machine."""
    checkout.run(docs_block(DOCS, "cp .env.example .env"))
    specs = checkout.root / "test-specs"
    specs.mkdir()
    (specs / "tiny.toml").write_text(SPEC.format(name=NIGHT_PREFIX, epochs=EPOCHS, trials=TRIALS), encoding="utf-8")
    (checkout.root / "nightly-cpu.yml").write_text(NIGHTLY_CPU_OVERRIDE, encoding="utf-8")
    checkout.set_env(
        COMPOSE_PROJECT_NAME=checkout.project,
        **free_host_ports(),
        SWEEP_STUDY=STUDY,
        SWEEP_SPEC="tiny",
        SWEEP_SPECS_DIR="./test-specs",
        SWEEP_FOLLOW=NIGHT_PREFIX,
        # Seconds, not minutes, to see a stopped worker go unhealthy.
        SWEEP_HEARTBEAT_INTERVAL="2",
        SWEEP_HEALTHCHECK_MAX_AGE_S="6",
        SWEEP_HEALTHCHECK_INTERVAL="2s",
    )
    checkout.studies.add(STUDY)
    # Small image first: a broken base build fails in seconds, not after the TF layer.
    checkout.compose("--profile", "cpu", "build", "init", timeout=900)
    # Then the docs block itself: build (cached now), `up -d`, `ps`.
    checkout.run(docs_block(DOCS, "docker compose --profile cpu up -d"), timeout=1500)
    yield checkout
    checkout.teardown()  # now, not at the session's end: free the CPUs for the next module


def test_images_carry_their_lock_and_record_their_versions(stack: Checkout) -> None:
    from tests.test_docker_files import read_lock

    for image, lock in (("regsweep-base:latest", "base"), ("regsweep-worker-cpu:latest", "cpu")):
        frozen = stack.run(["docker", "run", "--rm", "--entrypoint", "cat", image, "/opt/regsweep/versions.txt"]).stdout
        carried = {
            line.split("==")[0].lower().replace("_", "-").replace(".", "-"): line.split("==")[1]
            for line in frozen.splitlines() if "==" in line
        }
        pins = read_lock(REPO / "requirements" / f"{lock}.lock")
        wrong = {name: (version, carried.get(name)) for name, version in pins.items() if carried.get(name) != version}
        assert not wrong, f"{image} does not carry requirements/{lock}.lock exactly: {wrong}"
        labels = stack.inspect_image(image)["Config"]["Labels"] or {}
        if lock != "base":
            assert labels.get("org.regsweep.lock") == f"requirements/{lock}.lock", labels
    # TensorFlow itself, unfiltered (the worker's training child filters TF's native log lines):
    # plain `tensorflow` logged "failed call to cuInit" on every start of the CPU image.
    probe = stack.run(["docker", "run", "--rm", "--entrypoint", "python", "-e", "CUDA_VISIBLE_DEVICES=-1",
                       "regsweep-worker-cpu:latest", "-c",
                       "import tensorflow as tf; print([d.device_type for d in tf.config.list_physical_devices()])"])
    assert probe.stdout.strip() == "['CPU']" and "cuInit" not in probe.stderr and "cuda" not in probe.stderr.lower(), (
        probe.stderr
    )


def test_cpu_profile_up_starts_a_healthy_worker(stack: Checkout) -> None:
    worker = stack.container("worker-cpu")
    wait_for("worker-cpu to become healthy", lambda: stack.health(worker) == "healthy", timeout=180)
    # The compose timing reached the container, and the image's own heartbeat check runs.
    check = stack.inspect(worker)["Config"]["Healthcheck"]
    assert check["Interval"] == 2_000_000_000 and "SWEEP_HEARTBEAT_FILE" in " ".join(check["Test"]), check


def test_dashboard_started_after_init_without_a_schema_race(stack: Checkout) -> None:
    init, dashboard = stack.inspect(stack.container("init")), stack.inspect(stack.container("dashboard"))
    assert init["State"]["ExitCode"] == 0 and init["State"]["Status"] == "exited", init["State"]
    times = {
        name: {k: c["State"][k] for k in ("StartedAt", "FinishedAt")}
        | {"restarts": c["RestartCount"], "id": c["Id"][:12]}
        for name, c in (("init", init), ("dashboard", dashboard))
    }
    assert dashboard["State"]["StartedAt"] > init["State"]["FinishedAt"], times
    logs = stack.logs("dashboard") + stack.logs("init")
    assert "duplicate key" not in logs and "Traceback" not in logs, logs[-3000:]


def test_a_stopped_worker_process_goes_unhealthy_and_back(stack: Checkout) -> None:
    worker = stack.container("worker-cpu")
    pid = _worker_pid(stack, worker)
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for("a SIGSTOPped worker to turn unhealthy", lambda: stack.health(worker) == "unhealthy", timeout=90)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for("the resumed worker to turn healthy again", lambda: stack.health(worker) == "healthy", timeout=60)


def test_compose_stop_mid_trial_then_start_resumes_from_the_checkpoint(stack: Checkout) -> None:
    def running_after_an_epoch() -> optuna.trial.FrozenTrial | None:
        running = [t for t in _trials(stack) if t.state == TrialState.RUNNING and t.intermediate_values
                   and t.user_attrs.get("dedup_of") is None]
        return running[0] if running and max(running[0].intermediate_values) < EPOCHS - 2 else None

    victim = wait_for("a trial that finished its first epoch", running_after_an_epoch, timeout=240, every=0.3)
    # stop + start, as the docs block has them: SIGTERM, the worker gives the trial back, restarts.
    stack.run(docs_block(DOCS, "docker compose stop worker-cpu"), timeout=120)
    stopped = next(t for t in _trials(stack) if t.number == victim.number)
    assert stopped.state == TrialState.FAIL and stopped.user_attrs.get("stop_cause") == "shutdown", (
        stopped.state, stopped.user_attrs.get("stop_cause"), stopped.user_attrs.get("fail_reason"))
    assert "Received SIGTERM" in stack.logs("worker-cpu")

    def resumed() -> optuna.trial.FrozenTrial | None:
        return next(
            (t for t in _trials(stack) if (t.user_attrs.get("resumed") or {}).get("from_trial") == victim.number), None
        )

    trial = wait_for(f"a trial resuming trial {victim.number}", resumed, timeout=240, every=0.5)
    assert trial.user_attrs["resumed"]["epochs_saved"] >= 1, trial.user_attrs["resumed"]
    assert "resumes at epoch" in stack.logs("worker-cpu")


def test_the_sweep_finishes_with_an_exact_budget(stack: Checkout) -> None:
    worker = stack.container("worker-cpu")
    wait_for("worker-cpu to exit after the budget", lambda: stack.inspect(worker)["State"]["Status"] == "exited",
             timeout=420, every=2)
    assert stack.inspect(worker)["State"]["ExitCode"] == 0, stack.logs("worker-cpu")[-4000:]
    from sweep.study.budget import counts_toward_budget

    trials = _trials(stack)
    summary = [(t.number, t.state.name, t.user_attrs.get("stop_cause"), t.user_attrs.get("dedup_of")) for t in trials]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    given_back = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("stop_cause") == "shutdown"]
    # Every trial finished, but the one `docker compose stop` gave back; a COMPLETE that reused
    # an equal config's result (dedup_of) trained nothing and takes no slot.
    assert len(trials) == len(finished) + len(given_back) and len(given_back) == 1, summary
    assert sum(counts_toward_budget(t.state, t.user_attrs) for t in trials) == TRIALS, summary
    state = _budget(stack)
    assert (state.total, state.claimed, state.in_flight) == (TRIALS, TRIALS, 0), state
    assert all(t.user_attrs.get("epochs_run") for t in finished if t.user_attrs.get("dedup_of") is None), summary
    # What the user reads through the published port (docs block), and no cuInit probing.
    out = stack.run(docs_block(DOCS, 'sweep status "$SWEEP_STUDY"')).stdout
    assert STUDY in out
    logs = stack.logs("worker-cpu")
    assert "cuInit" not in logs and "cuda" not in logs.lower(), [
        line for line in logs.splitlines() if "cu" in line.lower()
    ][:5]


def test_dashboard_answers_api_studies_and_serves_an_artifact(stack: Checkout) -> None:
    port = stack.dotenv()["DASHBOARD_HOST_PORT"]
    base = f"http://127.0.0.1:{port}"

    def studies() -> list[dict[str, Any]] | None:
        try:
            with urllib.request.urlopen(f"{base}/api/studies", timeout=10) as response:
                return json.loads(response.read())["study_summaries"]
        except OSError:
            return None

    listed = wait_for("the dashboard's /api/studies", studies, timeout=120)
    study = next(s for s in listed if s["study_name"] == STUDY)
    trial = next(t for t in _trials(stack) if t.state == TrialState.COMPLETE and t.user_attrs.get("dedup_of") is None)
    from optuna.artifacts import get_all_artifact_meta

    metas = get_all_artifact_meta(trial, storage=_storage(stack))
    assert metas, f"trial {trial.number} has no artifacts"
    url = f"{base}/artifacts/{study['study_id']}/{trial._trial_id}/{metas[0].artifact_id}"
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read()
        assert response.status == 200 and len(body) > 100, (response.status, len(body))


def test_a_gpu_worker_without_a_gpu_exits_before_claiming_a_trial(stack: Checkout) -> None:
    """What `workers` does on a host whose driver is missing: exit 3, reason logged, study untouched."""
    fresh = "docker-nogpu"
    stack.studies.add(fresh)
    spec = stack.root / "test-specs" / "tiny.toml"
    stack.run(["sweep", "create", str(spec), "--name", fresh], env={"SWEEP_STORAGE": stack.host_storage()})
    result = stack.compose("--profile", "cpu", "run", "--rm", "--no-deps", "-e", "SWEEP_REQUIRE_GPU=1",
                           "-e", "CUDA_VISIBLE_DEVICES=0", "worker-cpu", "--study", fresh, check=False, timeout=300)
    assert result.returncode == 3, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "a GPU is required" in result.stderr and "nvidia-smi not found" in result.stderr, result.stderr[-2000:]
    state = _budget(stack, fresh)
    assert (state.claimed, state.settled) == (0, 0) and _trials(stack, fresh) == [], state


def test_sweep_workers_up_ls_down_with_cpu_containers(stack: Checkout) -> None:
    out = stack.run(docs_block(DOCS, "sweep workers up --cpus 2"), timeout=300).stdout
    names = [f"regsweep-{STUDY}-cpu0", f"regsweep-{STUDY}-cpu1"]
    assert all(name in out for name in names), out
    for name in names:
        wait_for(f"{name} to finish the extra trials and exit",
                 lambda name=name: stack.inspect(name)["State"]["Status"] == "exited", timeout=420, every=2)
        state = stack.inspect(name)["State"]
        assert state["ExitCode"] == 0, stack.run(["docker", "logs", name], check=False).stderr[-3000:]
        assert not stack.inspect(name)["HostConfig"].get("DeviceRequests")
    budget = _budget(stack)
    assert (budget.total, budget.claimed, budget.in_flight) == (TRIALS + 2, TRIALS + 2, 0), budget
    from sweep.study.budget import counts_toward_budget

    assert sum(counts_toward_budget(t.state, t.user_attrs) for t in _trials(stack)) == TRIALS + 2
    listed = stack.run("sweep workers ls", env={"COLUMNS": "200"}).stdout  # rich: no truncated names
    assert all(name in listed for name in names) and "exited" in listed, listed
    removed = stack.run(docs_block(DOCS, "set +a\nsweep workers down"), timeout=180).stdout
    assert "Removed 2 worker container(s)" in removed, removed
    left = stack.run(["docker", "ps", "-aq", "--filter", f"label=regsweep.study={STUDY}"]).stdout.split()
    assert left == [], left


def test_a_failed_gpu_up_leaves_no_created_container(stack: Checkout) -> None:
    env = {"SWEEP_STORAGE": stack.host_storage().replace("127.0.0.1", "postgres")}
    stack.studies.add("docker-gpu-up")
    result = stack.run(["sweep", "workers", "up", "--gpus", "0", "--image", "regsweep-worker-cpu:latest",
                        "--study", "docker-gpu-up"], env=env, check=False, timeout=120)
    assert result.returncode != 0 and "NVIDIA Container Toolkit" in result.stderr, (result.stdout, result.stderr)
    left = stack.run(["docker", "ps", "-aq", "--filter", "label=regsweep.study=docker-gpu-up"]).stdout.split()
    assert left == [], "a worker that never started is still there (status created)"


def test_scheduler_and_nightly_worker_run_a_short_night_and_write_its_report(stack: Checkout) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    until = (now + dt.timedelta(seconds=150)).strftime("%H:%M:%S")
    stack.set_env(SWEEP_CRON="* * * * *", SWEEP_UNTIL=until, SWEEP_TZ="UTC",
                  COMPOSE_FILE="docker-compose.yml:nightly-cpu.yml")
    night = f"{NIGHT_PREFIX}-{now:%Y-%m-%d}"
    stack.studies.add(night)
    stack.run(docs_block(DOCS, "docker compose --profile scheduler up -d"), timeout=600)

    def closed() -> bool:
        names = stack.run(
            ["docker", "compose", "exec", "-T", "scheduler", "ls", "/artifacts/reports"], check=False
        ).stdout
        return f"{night}.html" in names and f"{night}.md" in names

    wait_for(f"the report of night {night}", closed, timeout=420, every=5)
    trials = _trials(stack, night)
    assert trials and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for t in trials)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert done, [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in trials]
    study = optuna.load_study(study_name=night, storage=_storage(stack))
    deadline = str((study.user_attrs.get("spec") or {}).get("budget", {}).get("deadline"))
    assert deadline.startswith(f"{now:%Y-%m-%d}") and until in deadline, study.user_attrs.get("spec")
    report = stack.run(["docker", "compose", "exec", "-T", "scheduler", "cat", f"/artifacts/reports/{night}.md"]).stdout
    assert night in report, report[:2000]
    nightly_logs = stack.logs("worker-nightly")
    assert night in nightly_logs, nightly_logs[-3000:]
    # Between nights the following worker waits for the next study, alive: it must stay healthy
    # (it used to stop touching its heartbeat file after the night, and turned unhealthy).
    time.sleep(15)  # > SWEEP_HEALTHCHECK_MAX_AGE_S + 3 checks after the night's work ended
    health = stack.inspect(stack.container("worker-nightly"))["State"]["Health"]
    assert health["Status"] == "healthy", [h.get("Output") for h in health["Log"]][-3:]
