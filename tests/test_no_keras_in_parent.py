"""The worker process (workers.parent) never imports Keras or TensorFlow: only its training child does."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import workers.parent
from tests.helpers import REPO

_CHECK = (
    "import importlib, sys\n"
    "names = sys.argv[1:]\n"
    "for name in names:\n"
    "    importlib.import_module(name)\n"
    "import workers.cli\n"
    "loaded = sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules)\n"
    "print(len(names), loaded)\n"
    "raise SystemExit(1 if loaded else 0)\n"
)


def test_every_parent_module_imports_without_keras() -> None:
    modules = [f"workers.parent.{m.name}" for m in pkgutil.iter_modules(workers.parent.__path__)]
    assert {"workers.parent.loop", "workers.parent.trial", "workers.parent.runner"} <= set(modules)
    result = subprocess.run([sys.executable, "-c", _CHECK, *modules], capture_output=True, text=True, cwd=REPO,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{len(modules)} []"
