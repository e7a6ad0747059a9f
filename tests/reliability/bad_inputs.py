"""The table of malformed specs and command lines for ``test_bad_input.py``.

Each case is one real command line; ``{spec}`` is the case's spec file (a valid synthetic spec
with one thing broken), ``{db}`` the test database's URL, ``{server}`` the server's URL without a
database, ``{dir}`` the case's working directory. ``expect`` are fragments the single error line
must contain: they name the field or argument and the value at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BASE_SPEC = """{top}
[study]
{study}

[space.kernel]
{kernel}

[training]
{training}

[sampler]
{sampler}

[pruner]
{pruner}

[budget]
{budget}
{extra}
"""
SPEC_DEFAULTS = {"top": "", "study": 'name = "bad-{id}"', "kernel": 'kinds = ["none", "l2"]',
                 "training": 'trainer = "workers.synthetic:train"\nepochs = 2',
                 "sampler": "", "pruner": "", "budget": "trials = 4", "extra": ""}
CREATE = ("sweep", "create", "{spec}", "--storage", "{db}")
#: A study that exists (cases that need one: a bad --config, a bad --out).
EXISTING = "existing-study"


@dataclass(frozen=True)
class Case:
    """One malformed input: the command, what breaks its spec, and what the error must name."""

    id: str
    expect: tuple[str, ...]
    spec: dict[str, str] = field(default_factory=dict)
    argv: tuple[str, ...] = CREATE
    timeout: float = 60.0

    def spec_text(self) -> str:
        """The spec file of this case."""
        parts = {**SPEC_DEFAULTS, **self.spec}
        return BASE_SPEC.format(**{k: v.replace("{id}", self.id) for k, v in parts.items()})


def _training(*lines: str, trainer: str = "workers.synthetic:train", epochs: int = 2) -> dict[str, str]:
    return {"training": "\n".join((f'trainer = "{trainer}"', f"epochs = {epochs}", *lines))}


def _kernel(l2: str) -> dict[str, str]:
    return {"kernel": f'kinds = ["none", "l2"]\nl2 = {{ {l2} }}'}


CASES = [
    # -- spec: wrong types and values ---------------------------------------------------------
    Case("trials_wrong_type", ("budget.trials", "'ten'"), {"budget": 'trials = "ten"'}),
    Case("lambda_negative", ("space.kernel.l2.low", "-1.0"), _kernel("low = -1.0, high = 1e-2")),
    Case("lambda_zero", ("space.kernel.l2.low", "0.0"), _kernel("low = 0.0, high = 1e-2")),
    Case("lambda_nan", ("space.kernel.l2.low", "nan"), _kernel("low = nan, high = 1e-2")),
    Case("lambda_inf", ("space.kernel.l2.high", "inf"), _kernel("low = 1e-6, high = inf")),
    Case("lambda_bool", ("space.kernel.l2.low", "True"), _kernel("low = true, high = 1e-2")),
    Case("lambda_string", ("space.kernel.l2.low", "'small'"), _kernel('low = "small", high = 1e-2')),
    Case("range_inverted", ("space.kernel.l2", "low <= high", "low=0.01"), _kernel("low = 1e-2, high = 1e-6")),
    Case("range_one_bound", ("space.kernel.l2", "both bounds"), _kernel("low = 1e-6")),
    Case("values_empty", ("space.kernel.l2.values", "values=[]"), _kernel("values = []")),
    Case("values_and_range", ("space.kernel.l2", "not both"), _kernel("low = 1e-6, high = 1e-2, values = [1e-3]")),
    Case("kind_unknown", ("space.kernel.kinds", "'l3'"), {"kernel": 'kinds = ["none", "l3"]'}),
    Case("kinds_empty", ("space.kernel.kinds", "kinds=[]"), {"kernel": "kinds = []"}),
    Case("kind_twice", ("space.kernel.kinds", "each kind once"), {"kernel": 'kinds = ["l2", "l2"]'}),
    Case("custom_kind_missing", ("space.kernel.kinds", "no_such_module"), {"kernel": 'kinds = ["no_such_module:fn"]'}),
    Case("placement_unknown", ("space.weights", "unknown field"), {"extra": '[space.weights]\nkinds = ["l2"]'}),
    Case("space_empty", ("space", "empty search space"), {"kernel": 'kinds = ["none"]'}),
    Case("tie_to_itself", ("space.kernel.tie", "itself"), {"kernel": 'kinds = ["l2"]\ntie = "kernel"'}),
    Case("dataset_unknown", ("training.dataset", "'imagenet'"), _training('dataset = "imagenet"')),
    Case("dataset_dir_missing", ("training.dataset", "does not exist"), _training('dataset = "dir:/no/such/dir"')),
    Case("input_size_too_small", ("training.input_size", "8"), _training("input_size = 8")),
    Case("epochs_zero", ("training.epochs", "0"), _training(epochs=0)),
    Case("optimizer_unknown", ("training.optimizer", "'rmsprop'"), _training('optimizer = "rmsprop"')),
    Case("trainer_malformed", ("training.trainer", "'notamodule'"), _training(trainer="notamodule")),
    Case("sampler_unknown", ("sampler.name", "'cmaes'"), {"sampler": 'name = "cmaes"'}),
    Case("pruner_unknown", ("pruner.name", "'bogus'"), {"pruner": 'name = "bogus"'}),
    Case("budget_zero", ("budget.trials", "trials=0"), {"budget": "trials = 0"}),
    Case("budget_missing", ("budget", "received neither"), {"budget": ""}),
    Case("deadline_without_zone", ("budget.deadline", "time zone"), {"budget": "deadline = 2030-01-01T00:00:00"}),
    Case("trial_timeout_negative", ("budget.trial_timeout_s", "-1"), {"budget": "trials = 4\ntrial_timeout_s = -1"}),
    Case("grid_with_range", ("space.kernel.l2", "grid sampler needs values"), {"sampler": 'name = "grid"'}),
    Case("field_unknown", ("colour", "unknown field"), {"top": "colour = 3"}),
    Case("study_name_missing", ("study.name", "field required"), {"study": ""}),
    Case("study_name_bad", ("study.name", "'bad name!'"), argv=(*CREATE, "--name", "bad name!")),
    Case("toml_syntax_error", ("TOML syntax error", "line"), {"top": "[study"}),
    Case("spec_file_missing", ("file not found", "nope.toml"),
         argv=("sweep", "create", "{dir}/nope.toml", "--storage", "{db}")),
    Case("run_bad_spec", ("space.kernel.l2.low",), _kernel("low = -1.0, high = 1e-2"),
         argv=("sweep", "run", "{spec}", "--workers", "2", "--storage", "{db}")),
    # -- sweep command line -------------------------------------------------------------------
    Case("workers_zero", ("--workers", "workers=0"),
         argv=("sweep", "run", "{spec}", "--workers", "0", "--storage", "{db}")),
    Case("workers_not_int", ("--workers", "'abc'"),
         argv=("sweep", "run", "{spec}", "--workers", "abc", "--storage", "{db}")),
    Case("top_zero", ("--top", "top=0"), argv=("sweep", "best", EXISTING, "--top", "0", "--storage", "{db}")),
    Case("command_unknown", ("frobnicate",), argv=("sweep", "frobnicate")),
    Case("storage_scheme_unknown", ("Invalid storage", "notadb"),
         argv=("sweep", "create", "{spec}", "--storage", "notadb://x")),
    Case("storage_empty_postgres", ("Invalid storage", "database name"),
         argv=("sweep", "create", "{spec}", "--storage", "postgresql://")),
    Case("storage_not_a_url", ("Invalid storage", "'not a url'"),
         argv=("sweep", "create", "{spec}", "--storage", "not a url")),
    Case("storage_driver_missing", ("driver", "'mysql'"),
         argv=("sweep", "create", "{spec}", "--storage", "mysql://u@127.0.0.1/db")),
    Case("storage_database_unknown", ("does not exist", "no_such_db"),
         argv=("sweep", "create", "{spec}", "--storage", "{server}/no_such_db")),
    Case("storage_unreachable", ("port 1", "Connection refused"), timeout=150,
         argv=("sweep", "create", "{spec}", "--storage", "postgresql://postgres@127.0.0.1:1/test")),
    Case("study_unknown_status", ("'no-such-study'", "not found"),
         argv=("sweep", "status", "no-such-study", "--storage", "{db}")),
    Case("study_unknown_export", ("'no-such-study'", "not found"),
         argv=("sweep", "export", "no-such-study", "--out", "{dir}/x.csv", "--storage", "{db}")),
    Case("study_unknown_report", ("'no-such-study'", "not found"),
         argv=("sweep", "report", "no-such-study", "--out", "{dir}/r.html", "--storage", "{db}")),
    Case("enqueue_bad_json", ("--config", "not JSON"),
         argv=("sweep", "enqueue", EXISTING, "--config", "{bad", "--storage", "{db}")),
    Case("report_out_not_html", ("--out", ".html"),
         argv=("sweep", "report", EXISTING, "--out", "{dir}/r.txt", "--storage", "{db}")),
    # -- paths and budgets a new user got wrong (issue 13) ---------------------------------------
    Case("spec_is_directory", ("spec", "directory"), argv=("sweep", "create", "{dir}", "--storage", "{db}")),
    Case("deadline_past", ("budget.deadline", "past", "2020-01-01T00:00:00+00:00"),
         {"budget": "trials = 4\ndeadline = 2020-01-01T00:00:00+00:00"}),
    Case("export_out_missing_folder", ("--out", "does not exist"),
         argv=("sweep", "export", EXISTING, "--out", "{dir}/no/x.csv", "--storage", "{db}")),
    Case("export_out_directory", ("--out", "directory"),
         argv=("sweep", "export", EXISTING, "--out", "{dir}", "--storage", "{db}")),
    Case("enqueue_file_missing", ("--file", "not found"),
         argv=("sweep", "enqueue", EXISTING, "--file", "{dir}/none.json", "--storage", "{db}")),
    Case("report_out_missing_folder", ("--out", "does not exist"),
         argv=("sweep", "report", EXISTING, "--out", "{dir}/missing/dir/x.html", "--storage", "{db}")),
    Case("extend_zero", ("--trials", "trials=0"),
         argv=("sweep", "extend", EXISTING, "--trials", "0", "--storage", "{db}")),
    Case("status_no_database", ("No study database", "regsweep.db"), argv=("sweep", "status", EXISTING)),
    # -- sweep-worker ---------------------------------------------------------------------------
    Case("worker_no_study", ("--study",), argv=("sweep-worker", "--storage", "{db}")),
    Case("worker_study_unknown", ("'no-such-study'", "not found"),
         argv=("sweep-worker", "--storage", "{db}", "--study", "no-such-study")),
    Case("worker_storage_bad", ("Invalid storage", "notadb"),
         argv=("sweep-worker", "--storage", "notadb://x", "--study", EXISTING)),
    Case("worker_heartbeat_zero", ("--heartbeat-interval", "heartbeat_interval=0"),
         argv=("sweep-worker", "--storage", "{db}", "--study", EXISTING, "--heartbeat-interval", "0")),
    Case("worker_grace_too_short", ("--grace-period", "grace_period=5"),
         argv=("sweep-worker", "--storage", "{db}", "--study", EXISTING, "--heartbeat-interval", "10",
               "--grace-period", "5")),
    Case("worker_heartbeat_not_int", ("--heartbeat-interval", "'abc'"),
         argv=("sweep-worker", "--storage", "{db}", "--study", EXISTING, "--heartbeat-interval", "abc")),
]
