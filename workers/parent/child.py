"""Starting the training child: a fresh interpreter that imports only what the child needs.

``multiprocessing``'s spawn start method runs the parent's ``__main__`` again in every child (so
that functions defined there unpickle). A worker's ``__main__`` is the ``sweep-worker`` script,
which imports ``workers.cli`` and with it Optuna and SQLAlchemy: measured here, that made each
child start take 0.55-0.73 s instead of 0.22-0.29 s and hold 63 MB more (a bare interpreter
importing the child: 0.11 s, 17 MB). The child is started with :mod:`subprocess` instead, given
the parent's ``sys.path`` and one end of a ``multiprocessing`` pipe, so both sides keep
``Connection``'s framing and pickling.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
from multiprocessing.connection import Connection

__all__ = ["ChildProcess"]

#: Run by the child's interpreter: the parent's import path, then the child's main loop.
_BOOTSTRAP = ("import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
              "from workers.child.process import main_from_argv; main_from_argv(sys.argv[2:])")


class ChildProcess:
    """One training child and the worker's end of its pipe.

    Args:
        trainer_ref: ``"keras"`` or ``"package.module:function"``, imported by the child at start.
    """

    def __init__(self, trainer_ref: str) -> None:
        parent_conn, child_conn = mp.Pipe()
        try:
            # Inherits stdout/stderr (the child's logs are the worker's), not stdin.
            self._popen = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, json.dumps(sys.path), str(child_conn.fileno()), trainer_ref],
                pass_fds=(child_conn.fileno(),), stdin=subprocess.DEVNULL,
            )
        except BaseException:
            parent_conn.close()
            raise
        finally:
            child_conn.close()
        self.conn: Connection = parent_conn

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def exitcode(self) -> int | None:
        """The exit status once it exited (``-N``: killed by signal N), else None."""
        return self._popen.poll()

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds for the child to exit (it may still run afterwards)."""
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        """SIGKILL, unless it has exited already."""
        if self._popen.poll() is None:
            self._popen.kill()
