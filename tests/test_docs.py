"""Executable docs: the shell blocks of README.md and docs/*.md, run as a reader would type them.

Each document's ```bash / ```sh / ```console blocks run in order (``bash -e``, one block after the
other, ``export``s carried over) in a scratch copy of the repository, with ``.venv/bin`` first on
PATH, against a fresh PostgreSQL database per document and SQLite files in the copy. A block fails
the test on a non-zero exit or a ``Traceback`` in its output.

A block is not run when the line before its fence says why, visibly in the Markdown:
``<!-- docs-test: skip — REASON -->`` (cannot run here, e.g. needs a GPU host) or
``<!-- docs-test: docker -->`` (run against a real engine by the docker tests instead).

What the test changes, all of it here and nowhere else:

* **One substitution:** the example server URL ``postgresql://postgres@127.0.0.1:5432/regsweep``
  becomes this document's scratch database (the docs name it as "your server").
* **Presets named by a block are shrunk as data:** each ``sweep/presets/NAME.toml`` a block names is
  parsed, given ``budget.trials = 2``, ``training.epochs = 1``, ``training.limit = 256`` (images),
  a 32 px quarter-width model and no finalists, and written back into the scratch copy.
* **Long-running commands are bounded** by shell functions defined before each block:
  ``sweep dashboard`` is started on a free port (8080 may be taken on a shared machine), checked to
  answer ``/api/studies``, and stopped; ``sweep schedule`` is checked to validate its flags and
  spec and start (its banner), then stopped with its process group: a night's run is not exercised here (the
  scheduler's own tests do that). ``make`` runs with the installed ``.venv`` (``STAMP=`` and
  ``BIN=``): it must neither reinstall the shared environment nor build another one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import BIN, REPO, toml_value
from tests.reliability.support import fresh_database

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: The example server URL in the docs; replaced by the scratch database.
EXAMPLE_URL = "postgresql://postgres@127.0.0.1:5432/regsweep"
_FENCE = re.compile(r"^\s*```(bash|sh|console)\s*$")  # indented too: a block inside a list item
_MARKER = re.compile(r"^<!--\s*docs-test:\s*(skip|docker)\b\s*(?:[—-]+\s*(.*?))?\s*-->$")
_PRESET = re.compile(r"sweep/presets/([A-Za-z0-9_.-]+)\.toml")
BLOCK_TIMEOUT = 900


@dataclass(frozen=True)
class Block:
    """One fenced shell block of a document."""

    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marker: str | None  # "skip", "docker" or None (run)
    reason: str | None

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"

    def script(self) -> str:
        """The commands: a console block's ``$ `` lines, any other block as written."""
        if self.lang != "console":
            return self.text
        return "\n".join(line[2:] for line in self.text.splitlines() if line.startswith("$ "))


def blocks(doc: Path) -> list[Block]:
    """The shell blocks of ``doc`` with the marker on the line before each fence."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
        before = lines[i - 1].strip() if i else ""
        marker = _MARKER.match(before)
        found.append(Block(doc, i + 1, match[1], textwrap.dedent("\n".join(lines[i + 1:end])),
                           marker[1] if marker else None, (marker[2] or None) if marker else None))
        i = end + 1
    return found


def toml_dumps(data: dict[str, Any]) -> str:
    """TOML text for a spec: top-level keys, then one table per section (``[space.kernel]``)."""
    out = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]

    def table(prefix: str, body: dict[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not (isinstance(v, dict) and _is_table(v))}
        out.append(f"\n[{prefix}]")
        out.extend(f"{k} = {toml_value(v)}" for k, v in scalars.items())
        for k, v in body.items():
            if isinstance(v, dict) and _is_table(v):
                table(f"{prefix}.{k}", v)

    for key, value in data.items():
        if isinstance(value, dict):
            table(key, value)
    return "\n".join(out) + "\n"


def _is_table(value: dict[str, Any]) -> bool:
    # A section such as [space.kernel] holds further tables or lists; a lambda range is a leaf.
    return any(isinstance(v, (dict, list, str)) for v in value.values()) or not value


def shrink(spec: dict[str, Any]) -> dict[str, Any]:
    """The same sweep, small enough for two CPU cores: 2 trials of 1 epoch on 256 images."""
    spec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in spec.items()}
    budget = spec.setdefault("budget", {})
    budget["trials"] = min(int(budget.get("trials") or 2), 2)
    budget.pop("deadline", None)
    training = spec.setdefault("training", {})
    training.update(epochs=1, limit=256, input_size=32, width=0.25)
    training.pop("conv_bias", None)
    training.pop("steps_per_epoch", None)  # one pass over the 256 images
    if "finalists" in spec:
        spec["finalists"] = {**spec["finalists"], "top_k": 0}
    if spec.get("pruner", {}).get("name") == "hyperband":
        spec["pruner"] = {"name": "hyperband", "min_resource": 1, "reduction_factor": 3}
    return spec


#: Shell functions every block sees (see the module docstring: what is bounded and what is checked).
PRELUDE = r'''
sweep() {
    case "${1:-}" in
        dashboard) shift; _docs_dashboard "$@" ;;
        schedule) _docs_schedule "$@" ;;
        *) command sweep "$@" ;;
    esac
}
_docs_dashboard() {
    local port log pid
    port=$("$DOCS_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    log=$(mktemp)
    command sweep dashboard "$@" --port "$port" >"$log" 2>&1 &
    pid=$!
    if ! "$DOCS_PY" "$DOCS_PROBE" "$port" "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
        cat "$log"; return 1
    fi
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    cat "$log"
    echo "[docs-test] sweep dashboard $* answered /api/studies on port $port, then stopped"
}
_docs_schedule() {
    local log pid i
    log=$(mktemp)
    # Its own process group: the stop below also reaches local workers it may have started already
    # (a night whose window is open fires at once).
    setsid sweep "$@" >"$log" 2>&1 &
    pid=$!
    for i in $(seq 1 600); do
        if grep -q "^Scheduling" "$log"; then break; fi
        if ! kill -0 "$pid" 2>/dev/null; then local code=0; wait "$pid" || code=$?; cat "$log"; return "$code"; fi
        sleep 0.1
    done
    grep -q "^Scheduling" "$log" || { kill -KILL -- "-$pid"; cat "$log"; echo "no banner within 60 s"; return 1; }
    kill -TERM -- "-$pid"; wait "$pid" 2>/dev/null || true
    cat "$log"
    echo "[docs-test] sweep $* validated and started (banner), then stopped with its process group"
}
make() {
    command make "$@" STAMP= BIN="$DOCS_VENV_BIN"
}
'''

PROBE = '''"""Wait until the dashboard on port argv[1] answers /api/studies (or its process argv[2] died)."""
import json, os, sys, time, urllib.request
port, pid = int(sys.argv[1]), int(sys.argv[2])
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("dashboard exited before answering")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
            names = [s["study_name"] for s in json.loads(r.read())["study_summaries"]]
            print(f"[docs-test] dashboard lists studies {names}")
            sys.exit(0)
    except OSError:
        time.sleep(0.3)
sys.exit("dashboard did not answer within 90 s")
'''


def _copy_repo(dest: Path) -> None:
    """Tracked and untracked-but-not-ignored files, as a fresh clone with local edits would have."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@dataclass
class Ran:
    """What one block did."""

    block: Block
    code: int
    output: str
    seconds: float


def run_document(doc: Path, work: Path, db_url: str) -> list[Ran]:
    """Run every unmarked block of ``doc`` in order in the scratch copy ``work``."""
    runnable = [b for b in blocks(doc) if b.marker is None]
    engine = [b.where for b in runnable if re.search(r"^\s*docker\b", b.script(), re.MULTILINE)]
    # Never build images or start containers from here: such blocks belong to the docker suite.
    assert not engine, f"unmarked blocks run docker (mark them <!-- docs-test: docker -->): {engine}"
    for name in sorted({m for b in runnable for m in _PRESET.findall(b.script())}):
        preset = work / "sweep" / "presets" / f"{name}.toml"
        if preset.exists():
            preset.write_text(toml_dumps(shrink(tomllib.loads(preset.read_text(encoding="utf-8")))), encoding="utf-8")
    state, probe, prelude = work / ".docs-env", work / ".docs-probe.py", work / ".docs-prelude.sh"
    state.write_text("", encoding="utf-8")
    probe.write_text(PROBE, encoding="utf-8")
    prelude.write_text(PRELUDE, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_STORAGE", "OPTUNA_STORAGE", "SWEEP_STUDY",
                                                          "SWEEP_ARTIFACTS", "SWEEP_FOLLOW", "VIRTUAL_ENV")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(work), DOCS_PY=sys.executable,
               DOCS_PROBE=str(probe), DOCS_VENV_BIN=str(BIN), PYTHONUNBUFFERED="1")
    results = []
    for block in runnable:
        body = block.script().replace(EXAMPLE_URL, db_url)
        # Each block: the previous blocks' exports, the commands as written under -e, then save exports.
        script = f"source {prelude}\nsource {state}\nset -e\n{body}\nexport -p > {state}\n"
        started = time.monotonic()
        done = subprocess.run(["bash", "-e", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                              timeout=BLOCK_TIMEOUT, check=False)
        output = done.stdout + done.stderr
        results.append(Ran(block, done.returncode, output, time.monotonic() - started))
        print(f"[docs-test] {block.where}: exit {done.returncode} in {time.monotonic() - started:.1f}s")
        if done.returncode != 0 or "Traceback" in output:
            break
    return results


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    """A scratch copy of the repository."""
    _copy_repo(tmp_path / "repo")
    yield tmp_path / "repo"


def test_every_marker_is_well_formed() -> None:
    """Each skip names its reason; no marker sits anywhere but right before a shell fence."""
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if "docs-test:" not in line:
                continue
            where = f"{doc.relative_to(REPO)}:{i + 1}"
            match = _MARKER.match(line.strip())
            assert match, f"{where}: malformed marker {line!r}"
            assert i + 1 < len(lines) and _FENCE.match(lines[i + 1]), f"{where}: marker not right before a shell fence"
            if match[1] == "skip":
                assert match[2], f"{where}: a skip must say why"


def test_readme_blocks_that_can_run_here_are_not_marked() -> None:
    """The README's usage and demo blocks run; only installing, the suite and GPU/Docker hosts are marked."""
    readme = blocks(REPO / "README.md")
    run = [b for b in readme if b.marker is None]
    assert any("make demo" in b.script() for b in run)
    assert any("sweep create" in b.script() and "sweep report" in b.script() for b in run)
    for b in readme:
        if b.marker == "skip":
            assert re.search(r"GPU|install|suite|recurs", b.reason or "", re.IGNORECASE), (b.where, b.reason)


def test_readme_spec_example_is_valid(tmp_path: Path) -> None:
    """The README's TOML spec validates: its custom kind exists, its (optional) deadline is not past."""
    from sweep.spec.load import check_deadline_ahead, load_spec

    text = (REPO / "README.md").read_text(encoding="utf-8").split("### The spec", 1)[1]
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.toml"
    path.write_text(example, encoding="utf-8")
    spec = load_spec(path)
    check_deadline_ahead(spec)
    assert "workers.penalties:orthogonal" in spec.space.kernel.kinds


def test_shrink_keeps_a_valid_spec(tmp_path: Path) -> None:
    """The shrunk presets still validate, and are what the test says: 2 trials, 1 epoch, 256 images."""
    from sweep.spec.load import load_spec

    for preset in sorted((REPO / "sweep" / "presets").glob("*.toml")):
        path = tmp_path / preset.name
        path.write_text(toml_dumps(shrink(tomllib.loads(preset.read_text(encoding="utf-8")))), encoding="utf-8")
        spec, original = load_spec(path), load_spec(preset)
        assert (spec.training.epochs, spec.training.limit, spec.training.steps_per_epoch) == (1, 256, None)
        assert spec.budget.trials is None or spec.budget.trials <= 2
        assert spec.space == original.space and spec.sampler == original.sampler


#: Documents with at least one block to run (the others have no shell block or mark every one).
RUNNABLE = [d for d in DOCS if any(b.marker is None for b in blocks(d))]


def test_the_docs_that_must_run_do() -> None:
    """README.md and docs/overnight.md hold runnable blocks: a marker typo cannot silently drop them."""
    assert {REPO / "README.md", REPO / "docs" / "overnight.md"} <= set(RUNNABLE)


@pytest.mark.slow
@pytest.mark.parametrize("doc", RUNNABLE, ids=[d.name for d in RUNNABLE])
def test_document_blocks_run(doc: Path, work: Path, pg_url: str) -> None:
    """Every unmarked shell block of ``doc`` exits 0 without a traceback, in order."""
    with fresh_database(pg_url) as db_url:
        results = run_document(doc, work, db_url)
    total = sum(r.seconds for r in results)
    print(f"\n[docs-test] {doc.name}: {len(results)} block(s) in {total:.0f}s")
    for r in results:
        shown = (f"{r.block.where} exit {r.code} after {r.seconds:.0f}s\n{r.block.script()}\n"
                 f"--- output ---\n{r.output[-6000:]}")
        assert r.code == 0, shown
        assert "Traceback" not in r.output, shown
