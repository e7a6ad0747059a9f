"""Two `sweep run`s on one study (two terminals, same folder): distinct worker identities, distinct
sampler seeds (so not the same configs) and distinct log files. Real processes, real Postgres."""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tests.helpers import BIN, worker_env, write_spec

SPEC = """
dedup = false

[study]
name = "{name}"

[space.kernel]
kinds = ["l2"]                # every config has a continuous lambda: equal configs mean equal seeds

[training]
trainer = "workers.synthetic:train"
epochs = 2
trainer_options = {{ epoch_seconds = 0.3 }}

[sampler]
name = "tpe"
seed = 0

[budget]
trials = 8
"""


def test_two_sweep_runs_share_a_study_without_sharing_seeds_or_logs(
    pg_url: str, study_name: str, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "spec.toml", SPEC.format(name=study_name))
    # Create first, so the two runs race only over trials (both "continue" the study).
    env = worker_env()
    subprocess.run([str(BIN / "sweep"), "create", str(spec), "--storage", pg_url], env=env, check=True,
                   capture_output=True, cwd=tmp_path)
    runs = [subprocess.Popen([str(BIN / "sweep"), "run", str(spec), "--workers", "1", "--storage", pg_url],
                             env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]
    outputs = [r.communicate(timeout=180)[0] for r in runs]
    assert [r.returncode for r in runs] == [0, 0], "\n".join(o[-2000:] for o in outputs)

    trials = optuna.load_study(study_name=study_name, storage=pg_url).get_trials()
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 8

    configs = [repr(sorted(t.params.items())) for t in done]
    assert len(set(configs)) == len(configs), f"duplicate configs: {configs}"

    logs = sorted((tmp_path / "regsweep-logs" / study_name).iterdir())
    assert len(logs) == 2, logs
    pids = [{line.split("[", 1)[1].split("]", 1)[0]
             for line in log.read_text().splitlines() if "workers.parent.loop[" in line}
            for log in logs]
    assert all(len(p) == 1 for p in pids) and pids[0] != pids[1], pids  # one worker per file, not interleaved
    workers = {t.user_attrs["worker"]["id"]: t.user_attrs["worker"] for t in done}
    assert len(workers) == 2, sorted(workers)  # both runs took trials, each under its own identity
    # One worker per run: the thread pools keep the libraries' defaults (sweep.launcher.threads).
    assert {w["cpu_threads"] for w in workers.values()} == {None}
    seeds = {w["sampler_seed"] for w in workers.values()}
    assert len(seeds) == 2, seeds
    print(f"\n[identity] two sweep runs: worker ids {sorted(workers)}, sampler seeds {sorted(seeds)}, "
          f"logs {[p.name for p in logs]}, {len(set(configs))} distinct configs of {len(configs)}")
