"""Persistence: the immutable, hash-chained event log. Never imports torch."""

from typing import TYPE_CHECKING

from kasmina.exports import lazy

if TYPE_CHECKING:
    from kasmina.ledger.core import DEFAULT_URL, AppendResult, Ledger, RunInfo
    from kasmina.ledger.run import LedgerRecorder, Run
    from kasmina.ledger.verify import Fault, RunCheck, VerifyReport

#: Imported on first use (`kasmina.exports`): ``kasmina.ledger.refs`` alone stays cheap.
__getattr__ = lazy(
    __name__,
    {
        **dict.fromkeys(
            ("DEFAULT_URL", "AppendResult", "Ledger", "RunInfo"), "kasmina.ledger.core"
        ),
        **dict.fromkeys(("LedgerRecorder", "Run"), "kasmina.ledger.run"),
        **dict.fromkeys(("Fault", "RunCheck", "VerifyReport"), "kasmina.ledger.verify"),
    },
)

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
