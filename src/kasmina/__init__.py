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
from kasmina.exports import lazy

if TYPE_CHECKING:
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
    from kasmina.runtime.manager import SeedManager
    from kasmina.runtime.slot import SeedSlot
    from kasmina.stages import SeedStage

#: Imported on first use: `import kasmina` builds no model, and needs no torch.
__getattr__ = lazy(
    __name__,
    {
        "make_event": "kasmina.events",
        **dict.fromkeys(("GateResult", "QualityGates"), "kasmina.gates"),
        **dict.fromkeys(("Ledger", "Run", "VerifyReport"), "kasmina.ledger"),
        **dict.fromkeys(
            (
                "Action",
                "Advance",
                "Fossilize",
                "Germinate",
                "HeuristicPolicy",
                "Observation",
                "Policy",
                "Prune",
                "SetAlphaTarget",
                "Wait",
            ),
            "kasmina.policy",
        ),  # fmt: skip
        "SeedManager": "kasmina.runtime.manager",
        "SeedSlot": "kasmina.runtime.slot",
        "SeedStage": "kasmina.stages",
    },
)

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
