"""Reading a spec: TOML file -> validated :class:`~sweep.spec.model.SweepSpec`, one message per error."""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sweep.errors import SpecError
from sweep.spec.model import SweepSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["check_deadline_ahead", "load_spec", "parse_spec"]


def _format(error: Mapping[str, Any]) -> str:
    loc = [str(x) for x in error["loc"] if not str(x).startswith("function-")]
    where = ".".join(loc) or "spec"
    msg = error["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
        # Model-level validators name the sub-field themselves ("kernel.tie: ...").
        sub = re.match(r"^([a-z_][\w.]*): (.*)$", msg, re.S)
        if sub:
            where = sub[1] if where == "spec" else f"{where}.{sub[1]}"
            msg = sub[2]
        return f"Invalid {where}: {msg}"
    field = loc[-1] if loc else "spec"
    if error["type"] == "extra_forbidden":
        return f"Invalid {where}: unknown field, received {field}={error.get('input')!r}"
    if error["type"] == "missing":
        return f"Invalid {where}: field required"
    return f"Invalid {where}: {msg[0].lower()}{msg[1:]}, received {field}={error.get('input')!r}"


def check_deadline_ahead(spec: SweepSpec, now: dt.datetime | None = None) -> None:
    """Refuse a deadline that has passed: workers would start nothing and exit 0.

    Checked when a study is created from a spec, not when it is loaded back (a finished night's
    study keeps its past deadline).

    Args:
        spec: The validated spec.
        now: The current time (default: now, UTC).

    Raises:
        SpecError: ``budget.deadline`` is not in the future.
    """
    deadline = spec.budget.deadline
    now = now or dt.datetime.now(dt.timezone.utc)
    if deadline is not None and deadline <= now:
        raise SpecError(
            f"Invalid budget.deadline: it is in the past (now {now.replace(microsecond=0).isoformat()}), "
            f"received deadline={deadline.isoformat()!r}"
        )


def parse_spec(data: dict[str, Any], *, source: str = "spec") -> SweepSpec:
    """Validate a spec given as a dict (e.g. read back from study attrs).

    Args:
        data: The spec's content.
        source: Where it came from, for messages.

    Raises:
        SpecError: With one line per problem, each naming field and value.
    """
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as error:
        lines = [_format(e) for e in error.errors(include_url=False)]
        raise SpecError("\n".join(lines) if source == "spec" else f"{source}: " + "\n".join(lines)) from None


def load_spec(path: str | Path, *, name: str | None = None, dataset: str | None = None) -> SweepSpec:
    """Read and validate a TOML spec file.

    Args:
        path: The ``.toml`` file.
        name: Overrides ``study.name`` (e.g. a dated name from the scheduler).
        dataset: Overrides ``training.dataset`` (a preset on the user's own images).

    Raises:
        SpecError: Missing file, TOML syntax error, or invalid content.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"Invalid spec: file not found, received path={str(path)!r}") from None
    except IsADirectoryError:
        raise SpecError(f"Invalid spec: expected a .toml file, received a directory, path={str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(
            f"Invalid spec: cannot read the file ({error.__class__.__name__}), received path={str(path)!r}"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"Invalid spec {path}: TOML syntax error: {error}") from None
    if name is not None:
        data.setdefault("study", {})["name"] = name
    if dataset is not None:
        data.setdefault("training", {})["dataset"] = dataset
    return parse_spec(data)
