"""Installing regsweep prints no setuptools deprecation (the license was a TOML table, warned 4x
per install): a real isolated pip build of a copy of the project, its backend output captured."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def test_build_prints_no_license_deprecation(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, project / name)
    for package in ("sweep", "workers"):
        shutil.copytree(REPO / package, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path / "dist"),
                             str(project)], capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "project.license" not in output and "SetuptoolsDeprecationWarning" not in output, [
        line for line in output.splitlines() if "eprecat" in line or "license" in line.lower()][:10]
    wheel = next((tmp_path / "dist").glob("regsweep-*.whl"))
    import zipfile

    metadata = zipfile.ZipFile(wheel).read("regsweep-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
