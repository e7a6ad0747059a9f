"""Logging set-up shared by every regsweep process: one format, passwords always masked."""

from __future__ import annotations

import logging
import os
import warnings

from sweep.masking import mask_secrets

__all__ = ["MaskingFormatter", "setup_logging"]


class MaskingFormatter(logging.Formatter):
    """Formats records, then masks any ``scheme://user:password@`` in the result (tracebacks too)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


def setup_logging(level: str | int | None = None, *, optuna_logs: bool = True) -> None:
    """Configure the root logger once per process (``SWEEP_LOG_LEVEL`` overrides the default).

    Args:
        level: A level name or number; default from ``SWEEP_LOG_LEVEL`` or ``INFO``.
        optuna_logs: Route Optuna's logs through this handler too. The training child, which
            never uses Optuna, passes False: importing Optuna to configure it took ~150 ms of
            each child's start.
    """
    level = level or os.environ.get("SWEEP_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    handler = logging.StreamHandler()
    handler.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(level)
    if not optuna_logs:
        return
    # Optuna logs through its own handler; route it through ours so it is masked too.
    try:
        import optuna

        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()
        optuna.logging.set_verbosity(root.level)
        # regsweep uses heartbeats and grouped TPE on purpose; the notices only bury real errors.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    except ImportError:  # pragma: no cover
        pass
