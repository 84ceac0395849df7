"""kasmina: the lifecycle ledger and PyTorch runtime for morphogenetic training.

Importing kasmina never imports torch: the ledger, stages and events work on
a machine without it.
"""

from typing import TYPE_CHECKING

from kasmina.errors import (
    ConcurrencyError,
    DuplicateEvent,
    InvalidTransition,
    KasminaError,
    LedgerError,
    PayloadInvalid,
    RunExists,
    RunNotFound,
    SchemaMismatch,
    UnknownEventType,
)
from kasmina.events import make_event
from kasmina.gates import GateResult, QualityGates
from kasmina.ledger import Ledger, Run, VerifyReport
from kasmina.policy import (
    Action,
    Advance,
    Fossilize,
    Germinate,
    HeuristicPolicy,
    Observation,
    Policy,
    Prune,
    SetAlphaTarget,
    Wait,
)
from kasmina.replay import replay as _replay  # noqa: F401  (plugs the fold into Ledger.replay)
from kasmina.stages import SeedStage

if TYPE_CHECKING:
    from kasmina.runtime.manager import SeedManager
    from kasmina.runtime.slot import SeedSlot


def __getattr__(name: str) -> object:
    """`SeedSlot` and `SeedManager` are imported on first use: `import kasmina` needs no torch."""
    if name == "SeedSlot":
        from kasmina.runtime.slot import SeedSlot

        return SeedSlot
    if name == "SeedManager":
        from kasmina.runtime.manager import SeedManager

        return SeedManager
    raise AttributeError(f"module 'kasmina' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "Action",
    "Advance",
    "ConcurrencyError",
    "DuplicateEvent",
    "Fossilize",
    "GateResult",
    "Germinate",
    "HeuristicPolicy",
    "InvalidTransition",
    "KasminaError",
    "Ledger",
    "LedgerError",
    "Observation",
    "PayloadInvalid",
    "Policy",
    "Prune",
    "QualityGates",
    "Run",
    "RunExists",
    "RunNotFound",
    "SchemaMismatch",
    "SeedManager",
    "SeedSlot",
    "SeedStage",
    "SetAlphaTarget",
    "UnknownEventType",
    "VerifyReport",
    "Wait",
    "__version__",
    "make_event",
]
