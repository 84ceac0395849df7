"""kasmina: the lifecycle ledger and PyTorch runtime for morphogenetic training.

Importing kasmina never imports torch: the ledger, stages and events work on
a machine without it.
"""

from kasmina.errors import (
    ConcurrencyError,
    InvalidTransition,
    KasminaError,
    LedgerError,
    PayloadInvalid,
    RunNotFound,
    SchemaMismatch,
    UnknownEventType,
)
from kasmina.events import make_event
from kasmina.ledger import Ledger, Run, VerifyReport
from kasmina.stages import SeedStage

__version__ = "0.1.0"

__all__ = [
    "ConcurrencyError",
    "InvalidTransition",
    "KasminaError",
    "Ledger",
    "LedgerError",
    "PayloadInvalid",
    "Run",
    "RunNotFound",
    "SchemaMismatch",
    "SeedStage",
    "UnknownEventType",
    "VerifyReport",
    "__version__",
    "make_event",
]
