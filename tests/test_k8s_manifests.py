"""The Kubernetes manifests (deploy/k8s): rendered, schema-validated, and their containers run.

No cluster here, so three layers of checks instead:

* **render**: each overlay through the real kustomize (the one built into ``kubectl kustomize``;
  ``kustomize`` itself is used when installed);
* **validate**: every rendered object against the Kubernetes API schemas of ``K8S_VERSION`` with
  ``kubernetes-validate`` in strict mode (unknown fields are errors), plus the rules of this
  project (non-root, read-only root, resources, Secrets only, one GPU per worker pod...);
* **contract**: the containers' exact commands and environments, read from the rendered
  manifests (``envFrom``, ``env``, ``valueFrom``, ``$(VAR)`` expansion as the kubelet does it),
  run as local processes against the local Postgres: the PgBouncer container's start script,
  the init Job, the workers' wait-for-study init container, the worker through that PgBouncer,
  its liveness probe, and the dashboard. Like tests/test_compose_workers.py does for compose, the
  only substitutions are the values of the Secret and ConfigMap (local server, a scratch
  database), Service names -> 127.0.0.1 ports, and the containers' mount paths -> local folders.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import tomllib
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import kubernetes_validate
import optuna
import pytest
import yaml

from tests.helpers import BIN, REPO
from tests.test_docker_files import image_entrypoint, image_env, parse_dockerfile

K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
#: The Kubernetes version the manifests are validated against (CronJob timeZone: GA in 1.27;
#: Indexed Jobs with the completion-index annotation: 1.28+).
K8S_VERSION = "1.30"
#: Image -> Dockerfile.gpu target (regsweep-pgbouncer is deploy/pgbouncer/Dockerfile).
IMAGE_TARGETS = {"regsweep-base": "base", "regsweep-worker": "worker", "regsweep-worker-cpu": "worker"}
PLACEHOLDER_PASSWORD = "change-me-to-a-random-hex-string"


def _renderer() -> list[str]:
    """argv prefix of a real kustomize; fails in CI, skips elsewhere, without one."""
    if shutil.which("kustomize"):
        return [str(shutil.which("kustomize")), "build"]
    if shutil.which("kubectl"):
        return [str(shutil.which("kubectl")), "kustomize"]
    message = "neither kustomize nor kubectl (apt-get install -y kubectl) is installed"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")


_rendered: dict[str, list[dict[str, Any]]] = {}


def render(overlay: str) -> list[dict[str, Any]]:
    """The objects ``kustomize build deploy/k8s/overlays/<overlay>`` produces."""
    if overlay not in _rendered:
        done = subprocess.run([*_renderer(), str(K8S / "overlays" / overlay)], capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, f"kustomize build {overlay} failed:\n{done.stderr}"
        _rendered[overlay] = [d for d in yaml.safe_load_all(done.stdout) if d]
    return _rendered[overlay]


def _named(doc: dict[str, Any], name: str) -> bool:
    # A generated ConfigMap carries a content hash suffix (kustomize rewrites its references).
    actual = doc["metadata"]["name"]
    return actual == name or (
        doc["kind"] == "ConfigMap" and re.fullmatch(rf"{re.escape(name)}-[a-z0-9]{{10}}", actual) is not None
    )


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The object of ``kind`` named ``name``."""
    matches = [d for d in docs if d["kind"] == kind and _named(d, name)]
    assert len(matches) == 1, f"{len(matches)} {kind}/{name} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return matches[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The pod template spec of a workload (None for other kinds)."""
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if doc["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
        return doc["spec"]["template"]["spec"]
    return None


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Init containers and containers of a workload."""
    spec = pod_spec(doc) or {}
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """One container (or init container) of a workload by name."""
    (found,) = [c for c in containers(doc) if c["name"] == name]
    return found


def image_name(image: str) -> str:
    """``regsweep-worker:latest`` -> ``regsweep-worker``."""
    return image.rsplit("/", 1)[-1].split(":")[0].split("@")[0]


def sources(docs: list[dict[str, Any]], overrides: dict[str, dict[str, str]] | None = None
            ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """(ConfigMaps, Secrets) by their rendered names; ``overrides`` by base name replace values."""
    maps: tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]] = ({}, {})
    for doc in docs:
        if doc["kind"] in ("ConfigMap", "Secret"):
            kind = doc["kind"]
            base = next((n for n in (overrides or {}) if _named(doc, n)), None)
            data = {
                **data_of([doc], kind, doc["metadata"]["name"]),
                **((overrides or {}).get(base, {}) if base else {}),
            }
            maps[kind == "Secret"][doc["metadata"]["name"]] = data
    return maps


def data_of(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, str]:
    """A ConfigMap's data, or a Secret's decoded data (kustomize writes Secrets base64-encoded)."""
    doc = find(docs, kind, name)
    if kind == "Secret":
        return {**{k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()},
                **(doc.get("stringData") or {})}
    return dict(doc.get("data") or {})


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined variables replaced, ``$$`` -> ``$``, unknown kept."""
    return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def container_env(c: dict[str, Any], configmaps: dict[str, dict[str, str]], secrets: dict[str, dict[str, str]],
                  fields: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the kubelet gives container ``c``: envFrom first, then env in order."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]])
        else:
            env.update(secrets[source["secretRef"]["name"]])
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
            continue
        ref = item["valueFrom"]
        if "secretKeyRef" in ref:
            env[item["name"]] = secrets[ref["secretKeyRef"]["name"]][ref["secretKeyRef"]["key"]]
        elif "configMapKeyRef" in ref:
            env[item["name"]] = configmaps[ref["configMapKeyRef"]["name"]][ref["configMapKeyRef"]["key"]]
        else:
            env[item["name"]] = (fields or {})[ref["fieldRef"]["fieldPath"]]
    return env


def container_argv(c: dict[str, Any], env: dict[str, str]) -> list[str]:
    """command (else the image's ENTRYPOINT) + args, ``$(VAR)``-expanded."""
    target = IMAGE_TARGETS.get(image_name(c["image"]))
    command = c.get("command") or (image_entrypoint(target) if target else [])
    return [expand(str(a), env) for a in [*command, *c.get("args", [])]]


def healthcheck_command() -> list[str]:
    """The worker image's HEALTHCHECK CMD (exec form) from Dockerfile.gpu."""
    (stage,) = [s for s in parse_dockerfile() if s.name == "worker"]
    (check,) = stage.all("HEALTHCHECK")
    return json.loads(check.split("CMD", 1)[1].strip())


# ----------------------------------------------------------------------------------------------
# Render and validate


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_against_the_api_schemas(overlay: str) -> None:
    docs = render(overlay)
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    expected = {("StatefulSet", "postgres"), ("Deployment", "pgbouncer"), ("Service", "pgbouncer"),
                ("Job", "regsweep-init"), ("Job", "regsweep-workers"), ("Deployment", "regsweep-dashboard"),
                ("Service", "regsweep-dashboard"), ("CronJob", "regsweep-overnight"),
                ("Deployment", "regsweep-worker-nightly"), ("Secret", "regsweep-db")}
    assert expected <= set(kinds), f"missing: {expected - set(kinds)}"
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {str(error).splitlines()[0]}")
    assert not errors, "\n".join(errors)
    assert all(d["metadata"].get("namespace") == "regsweep" for d in docs if d["kind"] != "Namespace")


def test_the_validator_rejects_what_a_cluster_would() -> None:
    """The schema check has teeth: an unknown field and a wrong type are errors (strict mode)."""
    job = find(render("gpu"), "Job", "regsweep-workers")
    broken = json.loads(json.dumps(job))
    broken["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    broken = json.loads(json.dumps(job))
    broken["spec"]["parallelism"] = "four"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_non_root_read_only_with_resources(overlay: str) -> None:
    problems = []
    for doc in render(overlay):
        spec = pod_spec(doc)
        if spec is None:
            continue
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken (no pod needs the API)")
        mounted_tmp = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for c in containers(doc):
            security = c.get("securityContext", {})
            if (
                security.get("readOnlyRootFilesystem") is not True
                or security.get("allowPrivilegeEscalation") is not False
            ):
                problems.append(f"{where}/{c['name']}: readOnlyRootFilesystem / allowPrivilegeEscalation")
            if security.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}/{c['name']}: capabilities not dropped")
            resources = c.get("resources", {})
            if not {"cpu", "memory"} <= set(resources.get("requests", {})) or "memory" not in resources.get(
                "limits", {}
            ):
                problems.append(f"{where}/{c['name']}: requests cpu+memory and a memory limit")
            if not any(m["mountPath"] == "/tmp" and m["name"] in mounted_tmp for m in c.get("volumeMounts", [])):
                problems.append(f"{where}/{c['name']}: no writable /tmp (emptyDir) on a read-only root")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_credentials_come_only_from_the_secret(overlay: str) -> None:
    docs = render(overlay)
    secret = data_of(docs, "Secret", "regsweep-db")
    assert secret["POSTGRES_PASSWORD"] == PLACEHOLDER_PASSWORD, "the shipped Secret must hold the placeholder only"
    assert (K8S / "base" / "secret.example.env").read_text().count(PLACEHOLDER_PASSWORD) == 1
    others = yaml.safe_dump_all([d for d in docs if d["kind"] != "Secret"])
    assert PLACEHOLDER_PASSWORD not in others and "password=" not in others.lower()
    for doc in docs:
        for c in containers(doc):
            for item in c.get("env", []):
                if "PASSWORD" in item["name"]:
                    assert item.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "regsweep-db", item
                if item["name"] == "SWEEP_STORAGE":
                    assert "$(POSTGRES_PASSWORD)" in item["value"], f"{doc['metadata']['name']}: {item['value']}"
            assert not any("POSTGRES_PASSWORD" in str(a) for a in [*c.get("command", []), *c.get("args", [])]), (
                f"{doc['metadata']['name']}/{c['name']}: a password on a command line shows in ps"
            )


def test_gpu_overlay_gives_each_worker_pod_one_gpu_spread_over_nodes() -> None:
    docs = render("gpu")
    for kind, name in (("Job", "regsweep-workers"), ("Deployment", "regsweep-worker-nightly")):
        doc = find(docs, kind, name)
        worker = container(doc, "worker")
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1, worker["resources"]
        assert worker["resources"]["requests"]["nvidia.com/gpu"] == 1, worker["resources"]
        spread = pod_spec(doc)["topologySpreadConstraints"]  # type: ignore[index]
        assert [s["topologyKey"] for s in spread] == ["kubernetes.io/hostname"], spread
        # ...counting this workload's own pods.
        assert (
            spread[0]["labelSelector"]["matchLabels"].items() <= doc["spec"]["template"]["metadata"]["labels"].items()
        )
        assert {e["name"]: e.get("value") for e in worker["env"]}["SWEEP_REQUIRE_GPU"] == "1"
        # No other container of the pod asks for a GPU (N GPUs = N pods).
        assert all("nvidia.com/gpu" not in str(c.get("resources")) for c in containers(doc) if c is not worker)
    job = find(docs, "Job", "regsweep-workers")
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["parallelism"] == job["spec"]["completions"]
    env = {e["name"]: e for e in container(job, "worker")["env"]}
    assert env["SWEEP_WORKER_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    cpu = yaml.safe_dump_all(render("cpu"))
    assert "nvidia.com/gpu" not in cpu
    cpu_worker = container(find(render("cpu"), "Job", "regsweep-workers"), "worker")
    assert image_name(cpu_worker["image"]) == "regsweep-worker-cpu"
    assert {e["name"]: e.get("value") for e in cpu_worker["env"]}["CUDA_VISIBLE_DEVICES"] == ""


def test_workers_use_pgbouncer_and_the_rest_go_direct() -> None:
    docs = render("gpu")
    configmaps, secrets = sources(docs)
    service = find(docs, "Service", "pgbouncer")
    assert [p["port"] for p in service["spec"]["ports"]] == [6432]
    for doc in docs:
        for c in containers(doc):
            env = container_env(c, configmaps, secrets, {"metadata.annotations["
                                "'batch.kubernetes.io/job-completion-index']": "0"})
            if "SWEEP_STORAGE" not in env:
                continue
            host = env["SWEEP_STORAGE"].split("@", 1)[1].split("/", 1)[0]
            role = image_name(c["image"])
            expected = "pgbouncer:6432" if role.startswith("regsweep-worker") else "postgres:5432"
            assert host == expected, f"{doc['metadata']['name']}/{c['name']}: {host}"


def test_liveness_probe_is_the_images_heartbeat_healthcheck() -> None:
    """One command for both: the Dockerfile's HEALTHCHECK and the pods' livenessProbe must agree."""
    for overlay in OVERLAYS:
        for kind, name in (("Job", "regsweep-workers"), ("Deployment", "regsweep-worker-nightly")):
            probe = container(find(render(overlay), kind, name), "worker")["livenessProbe"]
            assert probe["exec"]["command"] == healthcheck_command(), f"{overlay} {name}"
            # Dead only after the image's own threshold (SWEEP_HEALTHCHECK_MAX_AGE_S, 120 s) has passed.
            assert probe["initialDelaySeconds"] >= 120


def test_overnight_cronjob_matches_its_command_and_has_a_deadline() -> None:
    cron = find(render("gpu"), "CronJob", "regsweep-overnight")
    argv = container(cron, "scheduler")["command"]
    flag = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    assert "--once" in argv and cron["spec"]["schedule"] == flag["--cron"] and cron["spec"]["timeZone"] == flag["--tz"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    # The longest night from --cron to --until (+1 h on the autumn DST night) must fit the deadline.
    start_h, start_m = int(flag["--cron"].split()[1]), int(flag["--cron"].split()[0])
    until_h, until_m = (int(x) for x in flag["--until"].split(":")[:2])
    night_s = ((until_h * 60 + until_m) - (start_h * 60 + start_m)) % (24 * 60) * 60 + 3600
    deadline = cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"]
    assert night_s < deadline <= night_s + 2 * 3600, f"activeDeadlineSeconds {deadline} for a {night_s} s night"


def test_nightly_workers_follow_the_scheduled_specs_studies() -> None:
    docs = render("gpu")
    config = data_of(docs, "ConfigMap", "regsweep-config")
    spec_file = Path(config["SWEEP_SPEC_PATH"].replace("/opt/regsweep/", f"{REPO}/", 1))
    assert spec_file.is_file(), f"{config['SWEEP_SPEC_PATH']} is not in the images (Dockerfile.gpu copies sweep/)"
    name = tomllib.loads(spec_file.read_text(encoding="utf-8"))["study"]["name"]
    assert config["SWEEP_FOLLOW"] == name
    nightly = container(find(docs, "Deployment", "regsweep-worker-nightly"), "worker")
    env = {e["name"]: e.get("value") for e in nightly["env"]}
    assert env["SWEEP_STUDY"] == "" and nightly["args"] == ["--follow", "$(SWEEP_FOLLOW)"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_command_line_parses_with_the_project_clis(overlay: str) -> None:
    docs = render(overlay)
    configmaps, secrets = sources(docs)
    fields = {"metadata.annotations['batch.kubernetes.io/job-completion-index']": "0"}
    checked = 0
    for doc in docs:
        for c in containers(doc):
            env = container_env(c, configmaps, secrets, fields)
            argv = container_argv(c, env)
            if argv[:2] == ["sh", "-c"]:  # wait-for-study: `until sweep status "$SWEEP_STUDY" > /dev/null; ...`
                line = argv[2].split(";")[0].removeprefix("until ").split(">")[0]
                argv = [a.replace("$SWEEP_STUDY", env["SWEEP_STUDY"]) for a in shlex.split(line)]
            if not argv or argv[0] not in ("sweep", "sweep-worker"):
                continue
            from sweep.cli import build_parser as sweep_parser
            from workers.cli import build_parser as worker_parser

            parser = worker_parser() if argv[0] == "sweep-worker" else sweep_parser()
            try:
                parser.parse_args(argv[1:])
            except SystemExit as error:
                pytest.fail(f"{doc['metadata']['name']}/{c['name']}: {argv[0]} rejects {argv[1:]} (exit {error.code})")
            checked += 1
    assert checked >= 6, checked


# ----------------------------------------------------------------------------------------------
# Contract: the containers' commands and environments, run here

SYNTHETIC_SPEC = """
dedup = false

[study]
name = "k8s-contract"

[space.kernel]
kinds = ["none", "l1", "l2"]

[training]
trainer = "workers.synthetic:train"
epochs = 2
trainer_options = { epoch_seconds = 0.2 }

[budget]
trials = 4
"""


class Pod:
    """Runs containers of one rendered workload as local processes, with the kubelet's env."""

    def __init__(self, docs: list[dict[str, Any]], mounts: dict[str, Path], secret: dict[str, str],
                 config: dict[str, str], hosts: dict[str, str]) -> None:
        self.configmaps, self.secrets = sources(docs, {"regsweep-config": config, "regsweep-db": secret})
        self.mounts = mounts  # mount path in the pod -> local folder
        self.hosts = hosts  # "service:port" -> "127.0.0.1:port"
        self.fields = {"metadata.annotations['batch.kubernetes.io/job-completion-index']": "0"}

    def local(self, text: str) -> str:
        """Mount paths and Service addresses -> their local stand-ins."""
        for service, local in self.hosts.items():
            text = text.replace(f"@{service}/", f"@{local}/")
        text = text.replace("/opt/regsweep/", f"{REPO}/")
        for mount, folder in self.mounts.items():
            text = re.sub(rf"(^|[\s'\"=]){mount}(?=/|$|[\s'\"])", lambda m, f=folder: m.group(1) + str(f), text)
        return text

    def prepare(self, c: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        """The container's argv and environment, localised; the image's ENV underneath."""
        target = IMAGE_TARGETS.get(image_name(c["image"]))
        raw = {**(image_env(target) if target else {}), **container_env(c, self.configmaps, self.secrets, self.fields)}
        argv = [self.local(a) for a in container_argv(c, raw)]
        env = {k: self.local(v) for k, v in raw.items()}
        if argv and argv[0] in ("sweep", "sweep-worker", "python"):
            argv[0] = str(BIN / argv[0])
        clean = {
            k: v for k, v in os.environ.items() if not k.startswith(("SWEEP_", "PGBOUNCER_")) and k != "OPTUNA_STORAGE"
        }
        return argv, {**clean, **env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                      "PYTHONPATH": str(REPO)}


def test_containers_run_their_exact_commands_against_local_postgres(pg_url: str, tmp_path: Path) -> None:
    """PgBouncer, init Job, wait-for-study, worker (through PgBouncer), liveness probe and dashboard."""
    from tests.reliability.pgbouncer import require_pgbouncer
    from tests.reliability.pgcluster import free_port
    from tests.reliability.support import fresh_database

    binary = require_pgbouncer()
    docs = render("cpu")
    for mount in ("artifacts", "specs"):
        (tmp_path / mount).mkdir()
    (tmp_path / "specs" / "contract.toml").write_text(SYNTHETIC_SPEC, encoding="utf-8")
    # The pod's /tmp emptyDir. PgBouncer refuses root, so as root it runs as `postgres`, which
    # must reach its run dir in there (pytest's own tmp folders are private to root).
    pod_tmp = Path(tempfile.mkdtemp(prefix="regsweep-k8s-tmp-"))
    os.chmod(pod_tmp, 0o1777)
    as_postgres = os.geteuid() == 0
    mounts = {"/tmp": pod_tmp, "/artifacts": tmp_path / "artifacts", "/specs": tmp_path / "specs"}
    try:
        server = pg_url.split("@", 1)[1].split("/", 1)[0]
        bouncer_port = free_port()
        with fresh_database(pg_url) as database_url:
            database = database_url.rsplit("/", 1)[1]
            pod = Pod(
                docs,
                mounts,
                # The Secret's values: the test server's superuser (trust auth), a throwaway password
                # that PgBouncer's scram-sha-256 still checks on the client side, a scratch database.
                secret={"POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": uuid.uuid4().hex, "POSTGRES_DB": database},
                config={
                    "REGSWEEP_DB_HOST": server.split(":")[0],
                    "REGSWEEP_DB_PORT": server.split(":")[1],
                    "SWEEP_STUDY": "k8s-contract",
                    "SWEEP_SPEC_PATH": "/specs/contract.toml",
                },
                hosts={"pgbouncer:6432": f"127.0.0.1:{bouncer_port}"},
            )

            # PgBouncer: the Deployment's container (ENTRYPOINT start.sh), listening on a free port.
            bouncer_c = container(find(docs, "Deployment", "pgbouncer"), "pgbouncer")
            assert "command" not in bouncer_c and "args" not in bouncer_c, "the image's ENTRYPOINT (start.sh) must run"
            (stage,) = parse_dockerfile(REPO / "deploy" / "pgbouncer" / "Dockerfile")
            assert json.loads(stage.all("ENTRYPOINT")[-1]) == ["regsweep-pgbouncer"]
            assert any(c.split()[-2:] == ["start.sh", "/usr/local/bin/regsweep-pgbouncer"] for c in stage.all("COPY"))
            _, env = pod.prepare(bouncer_c)
            env.update(PGBOUNCER_LISTEN_PORT=str(bouncer_port), PGBOUNCER_LISTEN_ADDR="127.0.0.1",
                       PATH=f"{Path(binary).parent}{os.pathsep}{env['PATH']}")
            assert "PGBOUNCER_AUTH_TYPE" not in env, "the manifest must keep the script's scram-sha-256 default"
            kwargs: dict[str, Any] = {"user": "postgres", "group": "postgres"} if as_postgres else {}
            log = tmp_path / "pgbouncer.log"
            with open(log, "wb") as handle:
                bouncer = subprocess.Popen(["sh", str(REPO / "deploy" / "pgbouncer" / "start.sh")], env=env,
                                           stdout=handle, stderr=subprocess.STDOUT, cwd=pod_tmp, **kwargs)
            try:
                deadline = time.monotonic() + 20
                while True:  # the readinessProbe: tcpSocket 6432
                    assert bouncer.poll() is None, f"pgbouncer exited {bouncer.returncode}:\n{log.read_text()}"
                    try:
                        socket.create_connection(("127.0.0.1", bouncer_port), timeout=1).close()
                        break
                    except OSError:
                        assert time.monotonic() < deadline, f"pgbouncer not listening after 20 s:\n{log.read_text()}"
                        time.sleep(0.2)
                # init Job: `sweep create $(SWEEP_SPEC_PATH) --name $(SWEEP_STUDY)`, direct to Postgres.
                argv, env = pod.prepare(container(find(docs, "Job", "regsweep-init"), "init"))
                assert "@pgbouncer" not in env["SWEEP_STORAGE"]
                created = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
                assert created.returncode == 0, f"{argv}:\n{created.stdout}\n{created.stderr}"

                workers = find(docs, "Job", "regsweep-workers")
                argv, env = pod.prepare(container(workers, "wait-for-study"))
                assert f"127.0.0.1:{bouncer_port}" in env["SWEEP_STORAGE"], "the workers must go through PgBouncer"
                waited = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
                assert waited.returncode == 0, f"wait-for-study:\n{waited.stdout}\n{waited.stderr}\n{log.read_text()}"

                worker_c = container(workers, "worker")
                argv, env = pod.prepare(worker_c)
                ran = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
                assert ran.returncode == 0, (
                    f"{argv}:\n{ran.stdout[-2000:]}\n{ran.stderr[-4000:]}\n{log.read_text()[-2000:]}"
                )
                study = optuna.load_study(study_name="k8s-contract", storage=database_url)
                states = [t.state.name for t in study.trials]
                assert states.count("COMPLETE") == 4 and len(states) == 4, states
                assert env["SWEEP_HEARTBEAT_FILE"].startswith(str(pod_tmp))
                probe_argv = [pod.local(a) for a in worker_c["livenessProbe"]["exec"]["command"]]
                probe_argv[0] = str(BIN / probe_argv[0])
                alive = subprocess.run(probe_argv, env=env, capture_output=True, text=True, timeout=30)
                assert alive.returncode == 0, f"liveness probe: {alive.stdout}{alive.stderr}"
                stale = subprocess.run(probe_argv, env={**env, "SWEEP_HEALTHCHECK_MAX_AGE_S": "0"}, capture_output=True,
                                       text=True, timeout=30)
                assert stale.returncode == 1, f"a stale heartbeat must fail the probe: {stale.stdout}"
            finally:
                bouncer.send_signal(signal.SIGTERM)
                bouncer.wait(timeout=10)

            # Dashboard: its command, on a free port instead of the pod's 8080; the probe path answers.
            argv, env = pod.prepare(container(find(docs, "Deployment", "regsweep-dashboard"), "dashboard"))
            port = free_port()
            argv[argv.index("--port") + 1] = str(port)
            argv[argv.index("--host") + 1] = "127.0.0.1"
            dashboard = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
            try:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                            assert response.status == 200
                            break
                    except OSError:
                        assert dashboard.poll() is None, dashboard.communicate()[0].decode(errors="replace")[-3000:]
                        assert time.monotonic() < deadline, "the dashboard did not answer within 60 s"
                        time.sleep(0.5)
            finally:
                dashboard.send_signal(signal.SIGTERM)
                dashboard.wait(timeout=20)
    finally:
        shutil.rmtree(pod_tmp, ignore_errors=True)
