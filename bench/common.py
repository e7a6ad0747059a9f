"""Shared pieces of the benchmarks: machine description, percentiles, result files, logging."""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["PG_URL", "RESULTS", "load1", "machine", "setup", "summarize", "versions", "write_result"]

RESULTS = Path(__file__).resolve().parent / "results"
#: The PostgreSQL the benchmarks use (same variable as the test suite).
PG_URL = os.environ.get("REGSWEEP_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")

logger = logging.getLogger("bench")


def setup(level: str = "INFO") -> None:
    """Progress logging for a benchmark process (rich if available); quiet TensorFlow and Optuna."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, log_time_format="%H:%M:%S")
    except ImportError:  # pragma: no cover
        handler = logging.StreamHandler()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel("WARNING")
    logger.setLevel(level)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:  # pragma: no cover
        pass


def load1() -> float:
    """The 1-minute load average (other engineers share this machine's cores)."""
    return round(os.getloadavg()[0], 2)


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from ``/proc/stat``."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def wait_until_quiet(busy_below: float = 0.25, max_wait_s: float = 30.0, window_s: float = 1.0) -> dict[str, float]:
    """Wait until the cores are busy less than ``busy_below`` of a ``window_s`` window, or ``max_wait_s``.

    The load average lags by minutes; what a timing needs is that the work before it (worker
    processes exiting, Postgres vacuuming the trials they wrote) is over now.

    Returns:
        ``{"cpu_busy": share of the last window, "waited_s": seconds waited}``.
    """
    started = time.monotonic()
    while True:
        busy0, total0 = _cpu_times()
        time.sleep(window_s)
        busy1, total1 = _cpu_times()
        share = (busy1 - busy0) / max(total1 - total0, 1)
        waited = time.monotonic() - started
        if share < busy_below or waited >= max_wait_s:
            return {"cpu_busy": round(share, 3), "waited_s": round(waited, 1)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:  # pragma: no cover
        pass
    return 0.0


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model, OS, GPU (None without one) and the load right now."""
    from workers.parent.environment import gpu_name  # no Keras: nvidia-smi only

    gpu = gpu_name()
    return {
        "cpus": os.cpu_count(),
        "mem_gib": _mem_gib(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": None if gpu == "cpu" else gpu,
        "load1_at_write": load1(),
    }


def versions(keras_too: bool = False) -> dict[str, str]:
    """Versions of the libraries a benchmark depends on."""
    import numpy
    import optuna
    import sqlalchemy

    out = {"optuna": optuna.__version__, "sqlalchemy": sqlalchemy.__version__, "numpy": numpy.__version__}
    try:
        out["postgres"] = _postgres_version()
    except Exception:  # pragma: no cover - no server
        pass
    if keras_too:
        from importlib import metadata

        import keras

        out.update({"keras": keras.__version__, "keras_backend": keras.backend.backend()})
        # Only what is installed (read, not imported): GPU machines with KERAS_BACKEND=jax carry no TensorFlow.
        for name in ("tensorflow", "jax", "jaxlib", "torch"):
            try:
                out[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                pass
    return out


def _postgres_version() -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SHOW server_version")).scalar())
    finally:
        engine.dispose()


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1], check=True).stdout.strip()
    except Exception:  # pragma: no cover
        return "unknown"


def summarize(values: Iterable[float], scale: float = 1000.0) -> dict[str, float]:
    """``n``, ``p50``, ``p95``, ``mean`` of durations in seconds, reported in ms (``scale``)."""
    xs = sorted(float(v) * scale for v in values)
    if not xs:
        return {"n": 0}

    def pct(q: float) -> float:
        k = min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))
        return round(xs[k], 3)

    return {"n": len(xs), "p50": pct(0.5), "p95": pct(0.95), "mean": round(statistics.fmean(xs), 3)}


def write_result(name: str, size: str, payload: dict[str, Any], command: str, keras_too: bool = False,
                 directory: Path = RESULTS) -> Path:
    """Write ``<directory>/<name>-<size>.json`` (default ``bench/results``).

    It holds the payload with the machine, versions, date, load and command.
    """
    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "size": size,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": command,
        "commit": _git_commit(),
        "machine": machine(),
        "versions": versions(keras_too),
        **payload,
    }
    path = directory / f"{name}-{size}.json"
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
