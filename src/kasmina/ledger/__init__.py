"""Persistence: the immutable, hash-chained event log. Never imports torch."""

from kasmina.ledger.core import DEFAULT_URL, AppendResult, Ledger, RunInfo
from kasmina.ledger.run import LedgerRecorder, Run
from kasmina.ledger.verify import Fault, RunCheck, VerifyReport

__all__ = [
    "DEFAULT_URL",
    "AppendResult",
    "Fault",
    "Ledger",
    "LedgerRecorder",
    "Run",
    "RunCheck",
    "RunInfo",
    "VerifyReport",
]
