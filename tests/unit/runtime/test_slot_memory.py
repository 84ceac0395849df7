"""Pruning gives memory back: blocks, seed modules and (on a GPU) device memory."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Sequence

import pytest
import torch

from kasmina.events import MemoryReleased, Payload
from kasmina.runtime.blocks import BlockPool, PoolExhausted
from kasmina.runtime.slot import SeedSlot
from kasmina.stages import SeedStage


class Sink:
    def __init__(self) -> None:
        self.payloads: list[Payload] = []

    def emit_many(
        self,
        payloads: Sequence[Payload],
        *,
        stream_id: str,
        epoch: int | None = None,
        seed_id: str | None = None,
    ) -> None:
        self.payloads.extend(payloads)


def cycle(slot: SeedSlot, n: int) -> None:
    slot.germinate("conv_small", f"s{n}", init_seed=n)
    slot.prune("cycle")
    while slot.stage is not SeedStage.DORMANT:
        slot.step_epoch()


def test_a_thousand_germinate_prune_cycles_leak_nothing() -> None:
    pool = BlockPool(4, (8,))
    sink = Sink()
    slot = SeedSlot("r0c0", 4, recorder=sink, pool=pool, blocks_per_seed=3, embargo_epochs=1)
    seeds: list[weakref.ref[torch.nn.Module]] = []
    for n in range(1000):
        slot.germinate("conv_small", f"s{n}", init_seed=n)
        assert slot.seed is not None
        seeds.append(weakref.ref(slot.seed))
        assert pool.free_count == 1
        slot.prune("cycle")
        while slot.stage is not SeedStage.DORMANT:
            slot.step_epoch()
    gc.collect()
    assert pool.free_count == pool.capacity == 4
    assert pool.allocations() == []
    assert sum(ref() is not None for ref in seeds) == 0
    released = [p for p in sink.payloads if isinstance(p, MemoryReleased)]
    assert len(released) == 1000 and {p.blocks for p in released} == {3}


def test_germination_that_cannot_get_blocks_records_nothing() -> None:
    pool = BlockPool(2, (8,))
    sink = Sink()
    slot = SeedSlot("r0c0", 4, recorder=sink, pool=pool, blocks_per_seed=3)
    with pytest.raises(PoolExhausted):
        slot.germinate("conv_small", "s1")
    assert slot.stage is SeedStage.DORMANT and sink.payloads == [] and pool.free_count == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_memory_returns_to_baseline_after_cycles() -> None:
    slot = SeedSlot("r0c0", 64, embargo_epochs=1).to("cuda")
    torch.cuda.synchronize()
    gc.collect()
    baseline = torch.cuda.memory_allocated()
    for n in range(200):
        cycle(slot, n)
    gc.collect()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == baseline
