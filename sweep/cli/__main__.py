"""``python -m sweep.cli`` runs the ``sweep`` command."""

from __future__ import annotations

import sys

from sweep.cli.main import main

sys.exit(main())
