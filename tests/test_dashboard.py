"""``sweep dashboard``: optuna-dashboard's HTTP API on a study run by a real worker with --artifacts."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore

from tests.helpers import BIN, REPO, run_cli, synthetic_spec, worker_env


@dataclass
class Dashboard:
    url: str
    study: str
    study_id: int
    artifacts: Path
    pg_url: str

    def get(self, path: str) -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("Content-Type", ""), error.read()

    def json(self, path: str) -> Any:
        status, _, body = self.get(path)
        assert status == 200, (path, status, body[:500])
        return json.loads(body)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def dashboard(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    tmp = tmp_path_factory.mktemp("dashboard")
    name, artifacts = f"t-dashboard-{uuid.uuid4().hex[:8]}", tmp / "artifacts"
    # Every trial trains (no reused duplicate, which has no model and takes no slot): 3 trials, 3 models.
    run_cli("create", str(synthetic_spec(tmp, name, trials=3, epochs=2, dedup=False)), "--storage", pg_url, check=True)
    env = worker_env(pg_url)
    worker = subprocess.run([str(BIN / "sweep-worker"), "--study", name, "--artifacts", str(artifacts),
                             "--keep-models"], env=env,
                            cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    port = _free_port()
    server = subprocess.Popen([str(BIN / "sweep"), "dashboard", "--port", str(port), "--artifacts", str(artifacts),
                               "--storage", pg_url], env=env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[0]
            try:
                with urllib.request.urlopen(url + "/api/studies", timeout=5) as response:
                    summaries = json.loads(response.read())["study_summaries"]
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "dashboard did not answer within 60 s"
                time.sleep(0.3)
        study_id = next(s["study_id"] for s in summaries if s["study_name"] == name)
        yield Dashboard(url, name, study_id, artifacts, pg_url)
    finally:
        server.terminate()
        try:
            output = server.communicate(timeout=15)[0]
        except subprocess.TimeoutExpired:
            server.kill()
            output = server.communicate()[0]
    assert f"Listening on http://127.0.0.1:{port}/" in output  # loopback only by default


def _trials(d: Dashboard) -> list[dict[str, Any]]:
    return sorted(d.json(f"/api/studies/{d.study_id}")["trials"], key=lambda t: t["number"])


def test_api_serves_study_trials_curves_and_kept_model_artifact(dashboard: Dashboard) -> None:
    d = dashboard
    summaries = d.json("/api/studies")["study_summaries"]
    assert [s["study_name"] for s in summaries if s["study_id"] == d.study_id] == [d.study]
    stored = {t.number: t for t in optuna.load_study(study_name=d.study, storage=d.pg_url).get_trials()}
    trials = _trials(d)
    assert [t["number"] for t in trials] == sorted(stored) and len(trials) == 3
    store = FileSystemArtifactStore(str(d.artifacts))
    for t in trials:
        attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
        # The per-epoch record (curves, diagnostics by epoch) is an artifact the ``record`` attr names.
        record = json.loads(attrs["record"])
        assert record == stored[t["number"]].user_attrs["record"]
        assert {a["artifact_id"]: a["filename"] for a in t["artifacts"]}.get(record["artifact_id"]) == \
            f"trial-{t['number']}-record.json"
        status, _, body = d.get(f"/artifacts/{d.study_id}/{t['trial_id']}/{record['artifact_id']}")
        assert status == 200
        assert len(json.loads(body)["curves"]["val_accuracy"]) == 2
        # The trained model (--keep-models): listed among its artifacts and served byte for byte.
        model = stored[t["number"]].user_attrs["model"]["artifact_id"]
        listed = {a["artifact_id"]: a["filename"] for a in t["artifacts"]}
        assert listed.get(model) == f"trial-{t['number']}-model.keras"
        status, _, body = d.get(f"/artifacts/{d.study_id}/{t['trial_id']}/{model}")
        with store.open_reader(model) as reader:
            assert (status, body) == (200, reader.read())
    status, _, _ = d.get(f"/artifacts/{d.study_id}/{trials[0]['trial_id']}/{uuid.uuid4()}")
    assert status == 404


def test_each_trial_shows_its_learning_curve_png(dashboard: Dashboard) -> None:
    # Attached before tell: Optuna refuses artifacts on a finished trial (fixed in bb28c8a).
    for t in _trials(dashboard):
        pngs = {a["filename"]: a for a in t["artifacts"] if a["mimetype"] == "image/png"}
        curves = pngs[f"trial-{t['number']}-curves.png"]
        status, content_type, body = dashboard.get(
            f"/artifacts/{dashboard.study_id}/{t['trial_id']}/{curves['artifact_id']}"
        )
        assert (status, content_type, body[:8]) == (200, "image/png", b"\x89PNG\r\n\x1a\n")


def test_every_listed_artifact_can_be_opened(dashboard: Dashboard) -> None:
    # A checkpoint superseded and removed from the store must not stay listed (a dead link, 500).
    for t in _trials(dashboard):
        for a in t["artifacts"]:
            assert dashboard.get(f"/artifacts/{dashboard.study_id}/{t['trial_id']}/{a['artifact_id']}")[0] == 200, a
