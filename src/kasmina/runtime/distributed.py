"""One run recorded by every rank of a `torch.distributed` job.

The rule that keeps a shared run coherent: **a stream has exactly one
writer, fixed when the run starts.** Rank 0 writes the `run` stream
(`RunStarted`, `EpochCompleted`, `RunFinished`); each slot's lifecycle is
written by the rank `RunStarted.slot_writers` names for it (round-robin over
the ranks by default, so the recording work is spread); every other stream
(a memory cache, say) is the process's own and is recorded as
``<stream>@<rank>``. Every rank runs every slot, since the replicas must stay
identical; a rank that does not write a slot gives it no recorder.

Gate verdicts are agreed: rank 0's result is broadcast and every rank makes
the same move (`agree`), so a rank whose own metrics differ (its own shard's
accuracy) cannot take its replica down another path. `finish` is a barrier:
each rank flushes and reports the heads of the streams it wrote, and only then
does rank 0 seal the run and check the seal holds every rank's heads.

Everything here is a collective: every rank must call it, in the same order.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.distributed as dist

from kasmina.errors import KasminaError
from kasmina.events import RUN_STREAM, RunFinished, slot_stream
from kasmina.gates import GateResult
from kasmina.ledger import Ledger, Run
from kasmina.ledger.run import LedgerRecorder

Status = Literal["completed", "failed", "aborted"]


class DistributedError(KasminaError):
    """Ranks disagree about the run, or one of them failed to record its part."""


def world() -> tuple[int, int]:
    """This process's rank and the world size; (0, 1) outside `torch.distributed`."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def round_robin(slot_ids: Sequence[str], world_size: int) -> dict[str, int]:
    """The default writers: slot i is written by rank i mod world size."""
    return {slot_id: i % world_size for i, slot_id in enumerate(slot_ids)}


def broadcast(value: object) -> object:
    """Rank 0's `value` on every rank (a collective); the other ranks send only padding."""
    rank, _ = world()
    sent = _exchange(pickle.dumps(value) if rank == 0 else b"")
    return value if rank == 0 else pickle.loads(sent[0])


def gather(value: object) -> list[object]:
    """Every rank's `value`, in rank order, on every rank (a collective)."""
    return [pickle.loads(b) for b in _exchange(pickle.dumps(value))]


# The handles of kasmina's latest collectives, kept on purpose (see `_exchange`).
_finished: deque[dist.Work] = deque(maxlen=64)


def _exchange(payload: bytes) -> list[bytes]:
    """Every rank's bytes on every rank, through two `all_gather`s whose handles outlive them.

    Not `dist.broadcast_object_list` or `all_gather_object`: the gloo worker
    thread that ran a collective drops its hold on it a moment after the
    caller's wait returns. If that hold were the last, the thread would free
    the collective's tensors, which needs the GIL; a rank that is already
    shutting its interpreter down by then (one that exits right after
    `DistributedRun.finish`) kills the thread inside C++ and aborts with
    SIGABRT. The handles of the last 32 exchanges are held here, so the
    worker's hold is never the last: by the time one leaves the queue, its
    worker has long let go, and the main thread frees it with the GIL. (Only
    until the next exchange is not enough: ranks often exchange back to back,
    before the worker has let go of the previous one.)
    """
    _, size = world()
    device = _object_device()
    length = torch.tensor([len(payload)], dtype=torch.int64, device=device)
    lengths = [torch.empty_like(length) for _ in range(size)]
    _settle(dist.all_gather(lengths, length, async_op=True))
    counts = [int(n.item()) for n in lengths]
    mine = torch.zeros(max(*counts, 1), dtype=torch.uint8, device=device)
    if payload:
        mine[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    everyone = [torch.empty_like(mine) for _ in range(size)]
    _settle(dist.all_gather(everyone, mine, async_op=True))
    return [bytes(t[:n].cpu().tolist()) for t, n in zip(everyone, counts, strict=True)]


def _settle(work: dist.Work | None) -> None:
    if work is None:
        raise DistributedError("torch.distributed returned no handle for an async collective")
    work.wait()
    _finished.append(work)


def _object_device() -> torch.device:
    """Where the default group carries bytes: the CPU if it can, else its first device.

    The backend reads ``nccl``, ``gloo``, or device pairs such as
    ``cuda:nccl`` and ``cpu:gloo,cuda:nccl``.
    """
    backend = str(dist.get_backend()).lower()
    pairs = [part.split(":", 1) for part in backend.split(",")]
    if all(len(pair) == 2 for pair in pairs):
        kinds = [pair[0] for pair in pairs]
        kind = "cpu" if "cpu" in kinds else kinds[0]
    else:
        kind = "cuda" if backend == "nccl" else "cpu"
    if kind == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(kind)


def agree(result: GateResult) -> GateResult:
    """Rank 0's verdict, on every rank; a rank whose own verdict differed gets a note."""
    rank, size = world()
    if size == 1:
        return result
    chosen = broadcast(result)
    if not isinstance(chosen, GateResult):
        raise DistributedError(f"rank 0 sent {type(chosen).__name__} for a gate verdict")
    if rank != 0 and chosen.passed != result.passed:
        mine = "passed" if result.passed else f"failed ({', '.join(result.checks_failed)})"
        return dataclasses.replace(
            chosen, message=f"{chosen.message} [rank {rank} had {mine}; rank 0 decides]"
        )
    return chosen


class DistributedRun:
    """The handle each rank holds on the shared run (see the module docstring)."""

    def __init__(self, run: Run[Ledger], world_size: int) -> None:
        self.run = run
        self.run_id = run.run_id
        self.rank = run.rank or 0
        self.world_size = world_size

    @classmethod
    def start(
        cls,
        ledger: Ledger,
        name: str,
        seed: int,
        *,
        slots: Sequence[str],
        slot_writers: Mapping[str, int] | None = None,
        buffer_size: int = 1000,
        **run_started: object,
    ) -> DistributedRun:
        """Rank 0 appends `RunStarted`; every rank gets the run id and the writer table.

        If rank 0 cannot start the run, every rank raises, rather than the
        others waiting forever for a run id.
        """
        rank, size = world()
        writers = dict(slot_writers) if slot_writers is not None else round_robin(slots, size)
        bad = {s: r for s, r in writers.items() if not 0 <= r < size}
        if bad:
            raise DistributedError(f"slot writers {bad} name ranks outside 0..{size - 1}")
        header: object = None
        if rank == 0:
            try:
                run = ledger.start_run(
                    name,
                    seed,
                    buffer_size=buffer_size,
                    world_size=size,
                    slot_writers=writers,
                    **run_started,  # type: ignore[arg-type]
                )
                header = (run.run_id, writers)
            except Exception as exc:
                broadcast(f"rank 0 could not start the run: {exc}")
                raise
        header = broadcast(header)
        if isinstance(header, str):
            raise DistributedError(header)
        if not isinstance(header, tuple):
            raise DistributedError(f"rank 0 sent {header!r} instead of a run id")
        run_id, writers = header
        if rank != 0:
            run = Run(ledger, run_id, buffer_size=buffer_size, rank=rank, writers=writers)
        return cls(run, size)

    @property
    def recorder(self) -> LedgerRecorder:
        """This rank's recorder, for `run` events (rank 0) and its own streams."""
        return self.run.recorder

    def writes_slot(self, slot_id: str) -> bool:
        return self.recorder.writes(slot_stream(slot_id))

    def recorder_for(self, slot_id: str) -> LedgerRecorder | None:
        """The recorder to give a slot: this rank's if it writes the slot, else None."""
        return self.recorder if self.writes_slot(slot_id) else None

    def finish(self, status: Status = "completed") -> str:
        """Flush every rank, then seal on rank 0; returns the seal's hash on every rank.

        A rank whose flush fails still reaches the barrier and says so, and
        the run is then sealed as failed: what the other ranks recorded stays.
        """
        failure: str | None = None
        try:
            self.recorder.flush()
        except KasminaError as exc:
            failure = f"rank {self.rank}: {exc}"
        reports = gather((self.rank, failure, dict(self.recorder.heads)))
        outcome: object = None
        if self.rank == 0:
            try:
                outcome = self._seal(status, reports)
            except Exception as exc:
                outcome = DistributedError(f"sealing run {self.run_id} failed: {exc}")
        outcome = broadcast(outcome)
        self.run.finished = True
        if isinstance(outcome, Exception):
            raise outcome
        if failure is not None:
            raise DistributedError(failure)
        return str(outcome)

    def _seal(self, status: Status, reports: Sequence[object]) -> str:
        failures = [r[1] for r in reports if isinstance(r, tuple) and r[1] is not None]
        ledger = self.run.ledger
        digest = ledger.finish_run(self.run_id, "failed" if failures else status, rank=0)
        last = list(ledger.read(self.run_id, stream_id=RUN_STREAM))[-1]
        assert isinstance(last.payload, RunFinished)
        seal = last.payload.seal
        for report in reports:
            if not isinstance(report, tuple):
                raise DistributedError(f"a rank sent {report!r} at the barrier")
            rank, _, heads = report
            for stream, (_, head) in heads.items():
                if stream != RUN_STREAM and seal.get(stream) != head:
                    raise DistributedError(
                        f"the seal of run {self.run_id} does not hold rank {rank}'s "
                        f"last event of {stream}"
                    )
        if failures:
            raise DistributedError("; ".join(str(f) for f in failures))
        return digest


__all__ = [
    "DistributedError",
    "DistributedRun",
    "agree",
    "broadcast",
    "gather",
    "round_robin",
    "world",
]
