"""Penalties: the one kind/lambda table, the regularizer config and the search space over it.

* :mod:`sweep.penalties.kinds`: placements, kinds and the lambdas each kind takes (the one table);
* :mod:`sweep.penalties.config`: ``Penalty`` and the frozen ``RegularizerConfig`` (canonical form, hash, label);
* :mod:`sweep.penalties.searchspace`: the conditional search space, Optuna params <-> configs. It reads the
  spec's space model (:mod:`sweep.spec.model`), which itself reads the kind table, so it is imported as
  its own module and not re-exported here.
"""

from __future__ import annotations

from sweep.penalties.config import Penalty, RegularizerConfig, config_label, penalty_text
from sweep.penalties.kinds import BUILTIN_KINDS, LAMBDAS, PLACEMENTS, is_custom_kind, kinds_using, lambdas_of

__all__ = [
    "BUILTIN_KINDS",
    "LAMBDAS",
    "PLACEMENTS",
    "Penalty",
    "RegularizerConfig",
    "config_label",
    "is_custom_kind",
    "kinds_using",
    "lambdas_of",
    "penalty_text",
]
