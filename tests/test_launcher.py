"""sweep/launcher/cli.py without a Docker engine: container specs are checked with docker-py's own
HostConfig, engine calls go to a small fake client."""

from __future__ import annotations

import argparse
import logging
import subprocess
import threading
from typing import Any

import docker
import docker.errors
import docker.types
import pytest

from sweep import launcher
from sweep.errors import LauncherError
from sweep.launcher import cli as launcher_cli

PASSWORD = "s3cret-Pa55"
STORAGE = f"postgresql+psycopg2://regsweep:{PASSWORD}@db.internal:5432/regsweep"
API_VERSION = "1.43"  # any API version >= 1.40 (DeviceRequests) works; fixed so nothing connects

NVIDIA_SMI_4 = """0, NVIDIA H100 80GB HBM3
1, NVIDIA H100 80GB HBM3
2, NVIDIA H100 80GB HBM3
3, NVIDIA H100 80GB HBM3
"""


def four_gpus() -> list[launcher.GpuInfo]:
    return launcher.parse_nvidia_smi(NVIDIA_SMI_4)


def specs_0_2(**kwargs: Any) -> list[launcher.WorkerSpec]:
    gpus = launcher.parse_gpus("0,2", available=four_gpus)
    options = {"image": "regsweep-worker:1.0", "study": "night-1", "storage": STORAGE, **kwargs}
    return launcher.build_worker_specs(gpus, **options)


# ----------------------------------------------------------------------------------------------
# Specs, validated by docker-py


def test_gpus_0_2_give_one_container_per_gpu_checked_by_docker_py_hostconfig() -> None:
    specs = specs_0_2()
    assert [s.gpu for s in specs] == ["0", "2"]
    assert len({s.name for s in specs}) == 2
    api = docker.APIClient(base_url="unix:///nonexistent/docker.sock", version=API_VERSION)
    for index, spec in enumerate(specs):
        kwargs = launcher.host_config_kwargs(spec)
        via_api = api.create_host_config(**kwargs)
        direct = docker.types.HostConfig(version=API_VERSION, **kwargs)
        assert via_api == direct
        assert direct["DeviceRequests"] == [
            {"Driver": "", "Count": 0, "DeviceIDs": [spec.gpu], "Capabilities": [["gpu"]], "Options": {}}
        ]
        assert direct["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 0}
        assert direct["Init"] is True
        assert direct["Binds"] == ["regsweep-artifacts:/artifacts:rw"]
        assert spec.labels == {
            "regsweep.role": "worker",
            "regsweep.study": "night-1",
            "regsweep.gpu": spec.gpu,
            "regsweep.image": "regsweep-worker:1.0",
        }
        assert spec.environment["SWEEP_STORAGE"] == STORAGE
        assert spec.environment["SWEEP_STUDY"] == "night-1"
        assert spec.environment["SWEEP_WORKER_INDEX"] == str(index)
        assert not any(PASSWORD in arg for arg in spec.command)


def test_run_kwargs_match_host_config_kwargs_in_docker_py() -> None:
    """containers.run(**run_kwargs) splits into the same HostConfig as host_config_kwargs."""
    create_args = pytest.importorskip("docker.models.containers")._create_container_args
    for spec in specs_0_2(network="regsweep_default", restart="on-failure:3"):
        run = launcher.run_kwargs(spec)
        assert run["environment"]["SWEEP_STORAGE"] == STORAGE and run["labels"] == spec.labels
        split = create_args({**run, "version": API_VERSION})
        expected = docker.types.HostConfig(version=API_VERSION, **launcher.host_config_kwargs(spec))
        assert split["host_config"] == expected
        assert split["host_config"]["NetworkMode"] == "regsweep_default"
        assert split["host_config"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
        assert split["command"] == ["--study", "night-1"]


def test_describe_and_logs_never_contain_the_password(caplog: pytest.LogCaptureFixture) -> None:
    specs = specs_0_2()
    for spec in specs:
        line = launcher.describe(spec)
        assert PASSWORD not in line
        assert "-e SWEEP_STORAGE " in line  # taken from the caller's environment by docker run
        assert "--gpus '\"device=" + spec.gpu + "\"'" in line
    client = FakeClient()
    with caplog.at_level(logging.DEBUG, logger="sweep.launcher"):
        launcher.up(client, specs)
    assert client.runs and all(r["environment"]["SWEEP_STORAGE"] == STORAGE for r in client.runs)
    assert "regsweep:***@db.internal" in caplog.text
    assert PASSWORD not in caplog.text


# ----------------------------------------------------------------------------------------------
# --gpus parsing


def test_all_uses_nvidia_smi_output() -> None:
    def runner(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert cmd == ["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"]
        return subprocess.CompletedProcess(cmd, 0, stdout=NVIDIA_SMI_4, stderr="")

    gpus = launcher.query_gpus(runner)
    assert gpus[3] == launcher.GpuInfo(index="3", name="NVIDIA H100 80GB HBM3")
    assert launcher.parse_gpus("all", available=lambda: launcher.query_gpus(runner)) == ["0", "1", "2", "3"]
    assert launcher.parse_gpus(" ALL ", available=four_gpus) == ["0", "1", "2", "3"]


def test_all_without_nvidia_smi_is_a_clear_error() -> None:
    def missing(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(cmd[0])

    with pytest.raises(LauncherError, match="nvidia-smi.*--gpus 0,1"):
        launcher.parse_gpus("all", available=lambda: launcher.query_gpus(missing))

    def failing(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(
            cmd, 9, stdout="", stderr="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
        )

    with pytest.raises(LauncherError, match="exit status 9: NVIDIA-SMI has failed"):
        launcher.parse_gpus("all", available=lambda: launcher.query_gpus(failing))
    with pytest.raises(LauncherError, match="no GPU"):
        launcher.parse_gpus("all", available=lambda: [])


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("", "--gpus=''"),
        ("0,,1", "''"),
        ("a", "'a'"),
        ("-1", "'-1'"),
        ("1.5", "'1.5'"),
        ("0;1", "'0;1'"),
        ("0,0", "0 twice"),
        ("7", "7 in --gpus='7'"),
        ("0,5", "5 in --gpus='0,5'"),
    ],
)
def test_bad_gpus_values_are_rejected_naming_the_value(value: str, named: str) -> None:
    with pytest.raises(LauncherError) as info:
        launcher.parse_gpus(value, available=four_gpus)
    assert "--gpus" in str(info.value) and named in str(info.value)


def test_explicit_ids_are_trusted_when_nvidia_smi_is_unavailable() -> None:
    def unavailable() -> list[launcher.GpuInfo]:
        raise LauncherError("nvidia-smi not found")

    assert launcher.parse_gpus("0,3", available=unavailable) == ["0", "3"]
    uuid = "GPU-5f1c2d3e-aaaa-bbbb-cccc-0123456789ab"
    assert launcher.parse_gpus(f"{uuid},1", available=None) == [uuid, "1"]
    spec = launcher.build_worker_spec(gpu=uuid, image="img", study="s", storage=STORAGE)
    assert spec.name == "regsweep-s-gpu5f1c2d3e"
    hc = docker.types.HostConfig(version=API_VERSION, **launcher.host_config_kwargs(spec))
    assert hc["DeviceRequests"][0]["DeviceIDs"] == [uuid]


@pytest.mark.parametrize("value", ["always", "unless-stopped", "on-failure:x", "sometimes"])
def test_restart_policies_that_would_loop_or_are_unknown_are_rejected(value: str) -> None:
    with pytest.raises(LauncherError, match=f"--restart='{value}'"):
        launcher.parse_restart(value)
    assert launcher.parse_restart("no") == {"Name": "no", "MaximumRetryCount": 0}


def test_sqlite_storage_is_rejected_and_loopback_warns(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(LauncherError, match="SQLite"):
        launcher.build_worker_spec(gpu="0", image="img", study="s", storage="sqlite:///regsweep.db")
    with caplog.at_level(logging.WARNING, logger="sweep.launcher"):
        launcher.build_worker_spec(gpu="0", image="img", study="s", storage=f"postgresql://u:{PASSWORD}@127.0.0.1/db")
    assert "container itself" in caplog.text and PASSWORD not in caplog.text


# ----------------------------------------------------------------------------------------------
# Engine calls against a fake client


class FakeContainer:
    def __init__(
        self, name: str, labels: dict[str, str], status: str = "running", client: FakeClient | None = None
    ) -> None:
        self.name, self.labels, self.status = name, labels, status
        self.short_id = f"id{abs(hash(name)) % 10**6:06d}"
        self.stopped = self.removed = False
        self.client = client

    def start(self) -> None:
        # Like the engine: a start that fails leaves the container in `created`.
        if self.client is not None and self.client.fail_start is not None:
            raise self.client.fail_start
        self.status = "running"

    def stop(self, timeout: int) -> None:
        if self.client is not None and self.client.stop_barrier is not None:
            self.client.stop_barrier.wait()  # every stop must be in flight at once
        self.stopped, self.status = True, "exited"

    def remove(self, force: bool = False) -> None:
        self.removed = True


class FakeContainers:
    def __init__(self, client: FakeClient) -> None:
        self.client = client

    def list(self, all: bool = False, filters: dict[str, Any] | None = None) -> list[FakeContainer]:
        wanted = dict(f.split("=", 1) for f in (filters or {}).get("label", []))
        return [
            c for c in self.client.existing
            if not c.removed and (all or c.status == "running") and wanted.items() <= c.labels.items()
        ]

    def create(self, **kwargs: Any) -> FakeContainer:
        if self.client.fail is not None:
            raise self.client.fail
        self.client.runs.append(kwargs)
        container = FakeContainer(kwargs["name"], kwargs["labels"], status="created", client=self.client)
        self.client.existing.append(container)
        return container

    def run(self, **kwargs: Any) -> FakeContainer:
        # docker-py's run(): create, then start (a failed start leaves the created container).
        container = self.create(**kwargs)
        container.start()
        return container


class FakeClient:
    def __init__(
        self,
        existing: list[FakeContainer] | None = None,
        fail: Exception | None = None,
        fail_start: Exception | None = None,
        stop_barrier: threading.Barrier | None = None,
    ) -> None:
        self.existing = existing or []
        self.runs: list[dict[str, Any]] = []
        self.fail = fail
        self.fail_start = fail_start
        self.stop_barrier = stop_barrier
        self.containers = FakeContainers(self)

    def ping(self) -> bool:
        return True


def test_up_keeps_running_workers_and_replaces_stopped_ones() -> None:
    specs = specs_0_2()
    stale = FakeContainer(specs[1].name, dict(specs[1].labels), status="exited")
    running = FakeContainer(specs[0].name, dict(specs[0].labels), status="running")
    client = FakeClient([running, stale])
    names = launcher.up(client, specs)
    assert names == [specs[0].name, specs[1].name]
    assert [r["name"] for r in client.runs] == [specs[1].name]
    assert stale.removed and not running.removed


def test_ls_and_down_find_workers_by_labels() -> None:
    a0, a2 = specs_0_2()
    (b0,) = launcher.build_worker_specs(["0"], image="img", study="other", storage=STORAGE)
    unrelated = FakeContainer("postgres", {"com.docker.compose.service": "postgres"})
    client = FakeClient([FakeContainer(s.name, dict(s.labels)) for s in (a0, a2, b0)] + [unrelated])
    infos = launcher.ls(client, study="night-1")
    assert [(i.study, i.gpu, i.image) for i in infos] == [
        ("night-1", "0", "regsweep-worker:1.0"),
        ("night-1", "2", "regsweep-worker:1.0"),
    ]
    assert launcher.down(client, study="night-1") == [a0.name, a2.name]
    assert [i.name for i in launcher.ls(client)] == [b0.name]
    assert not unrelated.removed


def test_engine_errors_become_launcher_errors() -> None:
    def unreachable() -> Any:
        raise docker.errors.DockerException("Error while fetching server API version: connection refused")

    with pytest.raises(LauncherError, match="Cannot reach the Docker engine.*connection refused"):
        launcher.connect(unreachable)
    with pytest.raises(LauncherError, match="build it with docker build -f Dockerfile.gpu"):
        launcher.up(FakeClient(fail=docker.errors.ImageNotFound("no such image")), specs_0_2())
    driver = docker.errors.APIError('could not select device driver "" with capabilities: [[gpu]]')
    with pytest.raises(LauncherError, match="NVIDIA Container Toolkit"):
        launcher.up(FakeClient(fail=driver), specs_0_2())


def test_a_failed_start_removes_the_created_container() -> None:
    """`up` whose start fails (no NVIDIA runtime) must not leave a `created` worker for `ls`."""
    driver = docker.errors.APIError('could not select device driver "" with capabilities: [[gpu]]')
    client = FakeClient(fail_start=driver)
    with pytest.raises(LauncherError, match="NVIDIA Container Toolkit.*--cpus N"):
        launcher.up(client, specs_0_2())
    assert client.runs, "the container was never created: the test did not reach start()"
    assert launcher.ls(client) == [], [c.status for c in client.existing if not c.removed]


def test_down_stops_all_workers_at_once() -> None:
    """Each stop may wait up to --timeout s for its trial; N sequential stops took N times that.
    The fake's stop() waits until all of them are in flight: sequential stops break the barrier."""
    specs = launcher.build_worker_specs(["0", "1", "2"], image="img", study="night-1", storage=STORAGE)
    barrier = threading.Barrier(len(specs), timeout=10)
    client = FakeClient(stop_barrier=barrier)
    client.existing = [FakeContainer(s.name, dict(s.labels), client=client) for s in specs]
    assert launcher.down(client, study="night-1", timeout=5) == [s.name for s in specs]
    assert all(c.stopped and c.removed for c in client.existing)
    assert launcher.ls(client) == []


def test_cpus_start_cpu_only_workers_without_a_gpu_request() -> None:
    specs = launcher.build_cpu_worker_specs(2, image="regsweep-worker-cpu:1", study="night-1", storage=STORAGE)
    assert [s.name for s in specs] == ["regsweep-night-1-cpu0", "regsweep-night-1-cpu1"]
    for index, spec in enumerate(specs):
        kwargs = launcher.host_config_kwargs(spec)
        host_config = docker.types.HostConfig(version=API_VERSION, **kwargs)
        assert not host_config.get("DeviceRequests"), host_config.get("DeviceRequests")
        assert spec.labels == {
            "regsweep.role": "worker", "regsweep.study": "night-1", "regsweep.cpu": str(index),
            "regsweep.image": "regsweep-worker-cpu:1",
        }
        assert spec.environment["CUDA_VISIBLE_DEVICES"] == "-1"
        assert spec.environment["SWEEP_REQUIRE_GPU"] == "0"
        assert spec.environment["SWEEP_WORKER_INDEX"] == str(index)
        assert "--gpus" not in launcher.describe(spec)
    # GPU workers, by contrast, must fail loudly without a usable GPU.
    assert all(s.environment["SWEEP_REQUIRE_GPU"] == "1" for s in specs_0_2())
    client = FakeClient()
    assert launcher.up(client, specs) == [s.name for s in specs]
    assert launcher.up(client, specs) == [s.name for s in specs]  # idempotent per CPU slot
    assert len(client.runs) == 2
    assert [i.device for i in launcher.ls(client)] == ["cpu 0", "cpu 1"]
    with pytest.raises(LauncherError, match="--cpus=0"):
        launcher.build_cpu_worker_specs(0, image="img", study="s", storage=STORAGE)


def test_cli_cpus_and_gpus_exclude_each_other(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWEEP_STORAGE", STORAGE)
    args = _parser().parse_args(["workers", "up", "--cpus", "2", "--image", "img:1", "--study", "night-1"])
    client = FakeClient()
    assert args.handler(args, client=client) == 0
    assert [r["name"] for r in client.runs] == ["regsweep-night-1-cpu0", "regsweep-night-1-cpu1"]
    assert all(not r["device_requests"] for r in client.runs)
    assert "CPU 0" in capsys.readouterr().out
    for argv in (["--gpus", "0", "--cpus", "1"], []):
        with pytest.raises(SystemExit):
            _parser().parse_args(["workers", "up", *argv, "--image", "i", "--study", "a"])


def test_connect_without_an_engine_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # docker.from_env itself, pointed at a socket that does not exist (no engine on this machine).
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/regsweep-test.sock")
    with pytest.raises(LauncherError, match="Cannot reach the Docker engine at unix:///nonexistent"):
        launcher.connect()


# ----------------------------------------------------------------------------------------------
# CLI wiring


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sweep")
    subparsers = parser.add_subparsers(dest="command")
    launcher_cli.register_cli(subparsers)
    assert list(subparsers.choices) == ["workers"]
    return parser


def test_register_cli_adds_workers_up_ls_down() -> None:
    parser = _parser()
    up = parser.parse_args(
        ["workers", "up", "--gpus", "0,2", "--image", "img:1", "--study", "s", "--restart", "on-failure:2"]
    )
    assert (up.gpus, up.image, up.study, up.restart, up.name_prefix) == (
        "0,2",
        "img:1",
        "s",
        "on-failure:2",
        "regsweep",
    )
    assert up.handler is launcher_cli._cmd_up
    assert parser.parse_args(["workers", "ls"]).handler is launcher_cli._cmd_ls
    down = parser.parse_args(["workers", "down", "--study", "s"])
    assert down.handler is launcher_cli._cmd_down and down.study == "s"
    with pytest.raises(SystemExit):
        parser.parse_args(["workers"])


def test_cli_up_prints_masked_storage_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SWEEP_STORAGE", STORAGE)
    monkeypatch.setattr(launcher_cli, "query_gpus", four_gpus)
    args = _parser().parse_args(["workers", "up", "--gpus", "1,3", "--image", "img:1", "--study", "night-1"])
    client = FakeClient()
    with caplog.at_level(logging.INFO, logger="sweep.launcher"):
        assert args.handler(args, client=client) == 0
    out = capsys.readouterr().out
    assert "GPU 1" in out and "GPU 3" in out and "regsweep:***@db.internal" in out
    assert PASSWORD not in out + caplog.text
    assert [r["environment"]["SWEEP_STORAGE"] for r in client.runs] == [STORAGE, STORAGE]


def test_cli_up_without_storage_or_study_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SWEEP_STORAGE", "OPTUNA_STORAGE", "SWEEP_STUDY"):
        monkeypatch.delenv(name, raising=False)
    args = _parser().parse_args(["workers", "up", "--gpus", "0", "--image", "img:1", "--study", "s"])
    with pytest.raises(LauncherError, match="SWEEP_STORAGE"):
        args.handler(args, client=FakeClient())
    args = _parser().parse_args(["workers", "up", "--gpus", "0", "--image", "img:1"])
    with pytest.raises(LauncherError, match="--study"):
        args.handler(args, client=FakeClient())


def test_sweep_cli_exposes_the_workers_group() -> None:
    cli = pytest.importorskip("sweep.cli")
    args = cli.build_parser().parse_args(["workers", "down", "--study", "s", "--timeout", "5"])
    assert args.handler is launcher_cli._cmd_down and args.timeout == 5


def test_follow_workers_run_follow_prefix_without_sweep_study(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEP_STORAGE", STORAGE)
    monkeypatch.setenv("SWEEP_STUDY", "should-not-leak")
    monkeypatch.setattr(launcher_cli, "query_gpus", four_gpus)
    args = _parser().parse_args(["workers", "up", "--gpus", "0", "--image", "img:1", "--follow", "nightly"])
    plain = launcher.build_worker_spec(gpu="0", image="img:1", study="nightly", storage=STORAGE)
    client = FakeClient([FakeContainer(plain.name, dict(plain.labels))])  # a --study worker, same prefix
    assert args.handler(args, client=client) == 0
    (run,) = client.runs
    assert run["command"] == ["--follow", "nightly"]
    # sweep-worker lets SWEEP_STUDY win over --follow, so it must not be set.
    assert "SWEEP_STUDY" not in run["environment"] and run["labels"]["regsweep.follow"] == "true"
    assert run["name"] == "regsweep-nightly-follow-gpu0" != plain.name
    with pytest.raises(SystemExit):
        _parser().parse_args(["workers", "up", "--gpus", "0", "--image", "i", "--study", "a", "--follow", "b"])
