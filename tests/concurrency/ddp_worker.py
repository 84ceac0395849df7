"""One rank of the DDP test: a DDP-wrapped digits host with two slots and a SeedManager.

Run by `torch.multiprocessing.spawn` (gloo on CPU in `make test`, nccl on a
machine with two GPUs: ``python tests/concurrency/ddp_worker.py URL OUT --backend nccl``).
Each rank trains on its own shard, so its accuracy differs from the other
rank's and only the agreed gate verdicts keep the replicas on one path. Each
rank writes what the parent checks to ``OUT/rank<N>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from kasmina.demo import DigitsHost, load_digits_tensors
from kasmina.events import CacheEvicted, memory_stream
from kasmina.gates import QualityGates
from kasmina.ledger import Ledger
from kasmina.policy import Action, Fossilize, Germinate, Observation, Prune
from kasmina.runtime.distributed import DistributedRun
from kasmina.runtime.manager import SeedManager
from kasmina.runtime.slot import SeedSlot
from kasmina.stages import SeedStage

SLOTS = ("r0c0", "r0c1")
EPOCHS = 9
WIDTH = 8


def _evaluator(x: torch.Tensor, y: torch.Tensor) -> Callable[[nn.Module], dict[str, float]]:
    def evaluate(model: nn.Module) -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            acc = float((model(x).argmax(1) == y).float().mean()) * 100.0
        model.train()
        return {"val_accuracy": round(acc, 3)}

    return evaluate


class _EndingPolicy:
    """Plants every slot at epoch 0; at HOLDING keeps the first slot's seed and prunes the other.

    Each rank runs its own copy, but only rank 0's actions are applied.
    """

    name = "ddp-test"

    def decide(self, observation: Observation) -> list[Action]:
        actions: list[Action] = []
        for i, (slot_id, state) in enumerate(observation.slots.items()):
            if observation.epoch == 0 and state.stage is SeedStage.DORMANT:
                actions.append(
                    Germinate(
                        slot_id,
                        blueprint="conv_small",
                        seed_id=f"seed-{i}",
                        init_seed=100 + i,
                        tempo=2,
                    )
                )
            elif state.stage is SeedStage.HOLDING and state.metrics.counterfactual is not None:
                if slot_id == SLOTS[0]:
                    actions.append(Fossilize(slot_id))
                else:
                    actions.append(Prune(slot_id, reason="ddp_test_done"))
        return actions


def _wrap(model: DigitsHost, device: torch.device) -> DDP:
    """A fresh DDP wrapper: a germinated seed brings new parameters."""
    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids, find_unused_parameters=True)


def run_rank(rank: int, world_size: int, init: str, url: str, out: str, backend: str) -> None:
    torch.set_num_threads(1)
    device = torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=init, rank=rank, world_size=world_size)
    started = time.perf_counter()
    report: dict[str, object] = {"rank": rank}
    try:
        torch.manual_seed(0)
        x_train, y_train, x_val, y_val = load_digits_tensors(0)
        x_train, y_train = (t[rank::world_size].to(device) for t in (x_train, y_train))
        x_val, y_val = (t[rank::world_size].to(device) for t in (x_val, y_val))
        with Ledger.open(url) as ledger:
            shared = DistributedRun.start(ledger, "ddp", seed=0, slots=SLOTS, buffer_size=64)
            gates = QualityGates(permissive=True, min_training_epochs=2, min_blending_epochs=2)
            slots = [SeedSlot(s, WIDTH) for s in SLOTS]
            model = DigitsHost(slots, WIDTH).to(device)
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            manager = SeedManager(
                model,
                opt,
                shared.recorder,
                policy=_EndingPolicy(),
                gates=gates,
                distributed=shared,
            )
            ddp = _wrap(model, device)
            evaluate = _evaluator(x_val, y_val)
            override_warnings: list[str] = []
            for epoch in range(EPOCHS):
                for start in range(0, len(y_train), 64):
                    opt.zero_grad()
                    loss = F.cross_entropy(
                        ddp(x_train[start : start + 64]), y_train[start : start + 64]
                    )
                    loss.backward()
                    manager.after_backward()
                    opt.step()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    result = manager.end_epoch(epoch, evaluate=evaluate)
                override_warnings += [str(w.message) for w in caught]
                if result.seeds_changed:
                    ddp = _wrap(model, device)
                # Each rank's own cache stream (renamed per rank by the recorder).
                shared.recorder.emit(
                    CacheEvicted(
                        cache="kernels",
                        evicted=rank + 1,
                        reason="ttl",
                        size_before=rank + 1,
                        size_after=0,
                    ),
                    stream_id=memory_stream("kernels"),
                    epoch=epoch,
                )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with slots[0].force_alpha(0.0):
                    evaluate(model)
            report["force_alpha_warnings"] = [str(w.message) for w in caught]
            report["override_warnings"] = override_warnings
            report["stages"] = {s.slot_id: s.stage.name for s in slots}
            report["params"] = {
                name: float(p.detach().double().sum().cpu()) for name, p in model.named_parameters()
            }
            report["seal"] = shared.finish()
            report["run_id"] = shared.run_id
            report["seconds"] = round(time.perf_counter() - started, 3)
    finally:
        dist.destroy_process_group()
        Path(out, f"rank{rank}.json").write_text(json.dumps(report))


def agree_rank(rank: int, world_size: int, init: str, out: str) -> None:
    """Rank 0 passes a gate that rank 1 fails on its own; both must take rank 0's verdict."""
    from kasmina.gates import GateResult
    from kasmina.runtime.distributed import agree

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size)
    try:
        mine = GateResult(
            gate="G2",
            passed=rank == 0,
            score=0.5,
            checks_passed=(),
            checks_failed=() if rank == 0 else ("too_soon",),
            message=f"rank {rank} {'passes' if rank == 0 else 'fails'}",
        )
        chosen = agree(mine)
        Path(out, f"agree{rank}.json").write_text(
            json.dumps({"passed": chosen.passed, "message": chosen.message})
        )
    finally:
        dist.destroy_process_group()


def exit_rank(rank: int, world_size: int, init: str, out: str) -> None:
    """Agree on a value, gather every rank's, then return at once: the process exits.

    The main thread keeps the GIL from the last collective until the
    interpreter shuts down (no switch interval to give it away), which is how
    a rank that exits straight after `DistributedRun.finish` can race the gloo
    worker thread still letting go of that collective.
    """
    from kasmina.runtime.distributed import broadcast, gather

    sys.setswitchinterval(1000.0)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size)
    chosen = broadcast(f"rank {rank}'s value")
    everyone = gather({"rank": rank, "chosen": chosen})
    Path(out, f"exit{rank}.json").write_text(json.dumps(everyone))
    broadcast(everyone)


def spawn(url: str, out: str, *, world_size: int = 2, backend: str = "gloo") -> None:
    """Run every rank and wait; a rank's failure raises here."""
    init = f"file://{os.path.join(out, 'rendezvous')}"
    torch.multiprocessing.spawn(
        run_rank, args=(world_size, init, url, out, backend), nprocs=world_size, join=True
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--backend", default="gloo")
    parser.add_argument("--world-size", type=int, default=2)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    spawn(args.url, args.out, world_size=args.world_size, backend=args.backend)
    wall = time.perf_counter() - t0
    reports = [
        json.loads(Path(args.out, f"rank{r}.json").read_text()) for r in range(args.world_size)
    ]
    with Ledger.open(args.url) as ledger:
        run_id = str(reports[0]["run_id"])
        events = list(ledger.read(run_id))
        verified = ledger.verify(run_id)
    per_rank: dict[str, int] = {}
    for e in events:
        per_rank[str(e.rank)] = per_rank.get(str(e.rank), 0) + 1
    print(
        json.dumps(
            {
                "backend": args.backend,
                "world_size": args.world_size,
                "run_id": run_id,
                "events": len(events),
                "events_per_rank": per_rank,
                "verify_ok": verified.ok,
                "streams": sorted({e.stream_id for e in events}),
                "stages": [r["stages"] for r in reports],
                "replicas_identical": all(r["params"] == reports[0]["params"] for r in reports),
                "override_warnings": [r["override_warnings"] for r in reports],
                "force_alpha_warned": [len(r["force_alpha_warnings"]) for r in reports],
                "rank_seconds": [r["seconds"] for r in reports],
                "wall_seconds": round(wall, 2),
            },
            indent=1,
        )
    )
    sys.exit(0 if verified.ok else 1)
