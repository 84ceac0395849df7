"""Child process for the crash test: appends numbered batches until killed.

Batch b has (b % 37) + 1 events, all tagged with epoch b; after each append
returns (committed) it prints b, so the parent knows what was acknowledged.
"""

from __future__ import annotations

import sys

from kasmina.events import SeedTelemetrySampled, make_event, slot_stream
from kasmina.ledger import Ledger
from kasmina.stages import SeedStage


def batch_size(number: int) -> int:
    return number % 37 + 1


def main(url: str, run_id: str, first: int) -> None:
    with Ledger.open(url) as ledger:
        number = first
        while True:
            ledger.append(
                [
                    make_event(
                        SeedTelemetrySampled(
                            slot_id=f"r{i % 3}",
                            stage=SeedStage.TRAINING,
                            alpha=i / 100,
                            accuracy=float(number),
                        ),
                        run_id=run_id,
                        stream_id=slot_stream(f"r{i % 3}"),
                        epoch=number,
                    )
                    for i in range(batch_size(number))
                ]
            )
            print(number, flush=True)
            number += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
