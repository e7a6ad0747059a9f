"""The ``sweep`` command line: an explicit table of commands (:mod:`sweep.cli.main`)."""

from __future__ import annotations

from sweep.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
