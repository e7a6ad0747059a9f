"""The embedded SQLite default under several local workers: no trial is handed out twice.

Python's sqlite3 driver starts a transaction only at the first write, so Optuna's "read a WAITING
trial, mark it RUNNING" was not atomic across processes: three workers of `sweep run` on the
embedded default once trained the same trial twice. Real processes on a real SQLite file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna

from sweep.storage import open_storage
from tests.helpers import worker_env

N_PROCS, ASKS = 4, 15

ASKER = f"""
import json, sys, time
import optuna
from sweep.storage import open_storage
url, start = sys.argv[1], float(sys.argv[2])
study = optuna.load_study(study_name="race", storage=open_storage(url))
time.sleep(max(0.0, start - time.time()))  # every process asks from the same moment
print(json.dumps([study.ask().number for _ in range({ASKS})]))
"""


def test_waiting_trials_are_popped_once_each_by_concurrent_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    study = optuna.create_study(study_name="race", storage=open_storage(url))
    for x in range(N_PROCS * ASKS):
        study.enqueue_trial({"x": x})
    start = time.time() + 8  # after every process has imported Optuna and opened the file
    procs = [subprocess.Popen([sys.executable, "-c", ASKER, url, str(start)], env=worker_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(N_PROCS)]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0] * N_PROCS, [err[-1500:] for _, err in outputs]
    numbers = [n for out, _ in outputs for n in json.loads(out)]
    assert sorted(numbers) == list(range(N_PROCS * ASKS)), sorted(numbers)  # each once, none created anew
    states = {t.state for t in optuna.load_study(study_name="race", storage=url).trials}
    assert states == {optuna.trial.TrialState.RUNNING}
