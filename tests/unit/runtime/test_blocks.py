from __future__ import annotations

import dataclasses
import random
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from kasmina.errors import KasminaError
from kasmina.runtime import blocks as blocks_module
from kasmina.runtime.blocks import (
    Allocation,
    BlockPool,
    BlockPoolError,
    DoubleFree,
    ForeignFree,
    PoolBusy,
    PoolExhausted,
)

SHAPE = (2, 3)


def test_fresh_pool_is_full_and_zeroed() -> None:
    pool = BlockPool(5, SHAPE)
    assert pool.capacity == 5
    assert pool.free_count == 5
    assert pool.block_shape == SHAPE
    assert pool.allocations() == []
    for index in range(5):
        block = pool.tensor(index)
        assert block.shape == SHAPE
        assert block.dtype == torch.float32
        assert torch.count_nonzero(block) == 0


def test_tensor_is_a_view_into_the_pool() -> None:
    pool = BlockPool(3, SHAPE)
    pool.tensor(1).fill_(7.0)
    assert torch.all(pool.tensor(1) == 7.0)
    assert torch.count_nonzero(pool.tensor(0)) == 0
    assert torch.count_nonzero(pool.tensor(2)) == 0
    with pytest.raises(BlockPoolError):
        pool.tensor(3)
    with pytest.raises(BlockPoolError):
        pool.tensor(-1)


def test_allocation_takes_distinct_blocks_and_records_them() -> None:
    pool = BlockPool(8, SHAPE)
    a = pool.allocate(3, "conv1", "seed-a")
    b = pool.allocate(2, "conv2", "seed-b")
    assert (a.seed_id, a.layer, len(a.blocks)) == ("seed-a", "conv1", 3)
    assert (b.seed_id, b.layer, len(b.blocks)) == ("seed-b", "conv2", 2)
    assert not set(a.blocks) & set(b.blocks)
    assert all(0 <= i < 8 for i in a.blocks + b.blocks)
    assert pool.free_count == 3
    assert pool.allocations() == [a, b]
    assert pool.allocations("seed-b") == [b]
    assert pool.allocations("nobody") == []


@pytest.mark.parametrize("n", [0, -1])
def test_allocating_no_blocks_is_refused(n: int) -> None:
    pool = BlockPool(4, SHAPE)
    with pytest.raises(BlockPoolError):
        pool.allocate(n, "layer", "seed")
    with pytest.raises(BlockPoolError):
        pool.allocate_layers("seed", {"ok": 1, "bad": n})
    assert pool.free_count == 4
    assert pool.allocations() == []


def test_exhaustion_names_both_counts_and_takes_nothing() -> None:
    pool = BlockPool(10, SHAPE)
    held = pool.allocate(7, "conv1", "seed-a")
    with pytest.raises(PoolExhausted) as info:
        pool.allocate(4, "conv2", "seed-b")
    assert isinstance(info.value, BlockPoolError)
    assert isinstance(info.value, KasminaError)
    assert (info.value.requested, info.value.free) == (4, 3)
    message = str(info.value)
    assert "4" in message and "3" in message and "\n" not in message
    assert pool.free_count == 3
    assert pool.allocations() == [held]
    rest = pool.allocate(3, "conv2", "seed-b")
    assert sorted(held.blocks + rest.blocks) == list(range(10))
    assert pool.free_count == 0


def test_double_free_is_detected_even_after_reuse_by_an_equal_record() -> None:
    pool = BlockPool(4, SHAPE)
    first = pool.allocate(2, "conv1", "seed-a")
    assert pool.free(first) == 2
    with pytest.raises(DoubleFree):
        pool.free(first)
    second = pool.allocate(2, "conv1", "seed-a")
    assert second == first and second is not first
    with pytest.raises(DoubleFree):
        pool.free(first)
    assert pool.allocations() == [second]
    assert pool.free_count == 2
    assert pool.free(second) == 2
    assert pool.free_count == 4


def test_freeing_another_seeds_blocks_is_refused() -> None:
    pool = BlockPool(4, SHAPE)
    theirs = pool.allocate(2, "conv1", "seed-a")
    pool.tensor(theirs.blocks[0]).fill_(3.0)
    forged = Allocation("seed-b", "conv1", theirs.blocks)
    with pytest.raises(ForeignFree) as info:
        pool.free(forged)
    assert "seed-a" in str(info.value)
    assert pool.allocations() == [theirs]
    assert pool.free_count == 2
    assert torch.all(pool.tensor(theirs.blocks[0]) == 3.0)


def test_freeing_a_record_this_pool_did_not_issue_is_refused() -> None:
    pool = BlockPool(4, SHAPE)
    other = BlockPool(4, SHAPE)
    mine = pool.allocate(2, "conv1", "seed-a")
    elsewhere = other.allocate(2, "conv1", "seed-a")
    with pytest.raises(ForeignFree):
        pool.free(elsewhere)
    with pytest.raises(ForeignFree):
        pool.free(Allocation("seed-a", "conv1", mine.blocks))
    with pytest.raises(ForeignFree):
        pool.free(Allocation("seed-a", "conv1", (99,)))
    assert pool.allocations() == [mine]
    assert pool.free_count == 2
    assert other.allocations() == [elsewhere]


def test_free_zeroes_the_blocks_it_returns() -> None:
    pool = BlockPool(3, SHAPE)
    allocation = pool.allocate(3, "conv1", "seed-a")
    for value, index in enumerate(allocation.blocks, start=1):
        pool.tensor(index).fill_(float(value))
    assert all(torch.count_nonzero(pool.tensor(i)) == 6 for i in allocation.blocks)
    pool.free(allocation)
    for index in range(3):
        assert torch.count_nonzero(pool.tensor(index)) == 0


def test_free_seed_frees_only_that_seed() -> None:
    pool = BlockPool(10, SHAPE)
    a1 = pool.allocate(2, "conv1", "seed-a")
    b1 = pool.allocate(3, "conv1", "seed-b")
    a2 = pool.allocate(4, "conv2", "seed-a")
    pool.tensor(b1.blocks[0]).fill_(5.0)
    assert pool.free_seed("seed-a") == 6
    assert pool.free_seed("seed-a") == 0
    assert pool.allocations() == [b1]
    assert pool.free_count == 7
    assert torch.all(pool.tensor(b1.blocks[0]) == 5.0)
    for stale in (a1, a2):
        with pytest.raises(DoubleFree):
            pool.free(stale)


def test_multi_layer_request_beyond_capacity_takes_nothing() -> None:
    pool = BlockPool(10, SHAPE)
    with pytest.raises(PoolExhausted) as info:
        pool.allocate_layers("seed-a", {"conv1": 3, "conv2": 4, "conv3": 5})
    assert (info.value.requested, info.value.free) == (12, 10)
    assert pool.free_count == 10
    assert pool.allocations() == []


def test_multi_layer_failure_part_way_returns_every_block(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = BlockPool(10, SHAPE)
    keeper = pool.allocate(1, "stem", "seed-z")
    made: list[Allocation] = []

    def failing_third(*args: Any) -> Allocation:
        if len(made) == 2:
            raise RuntimeError("injected failure on the third layer")
        record = Allocation(*args)
        made.append(record)
        return record

    monkeypatch.setattr(blocks_module, "Allocation", failing_third)
    with pytest.raises(RuntimeError, match="third layer"):
        pool.allocate_layers("seed-a", {"conv1": 2, "conv2": 3, "conv3": 1})
    monkeypatch.undo()

    assert [len(r.blocks) for r in made] == [2, 3]
    assert pool.free_count == 9
    assert pool.allocations() == [keeper]
    for record in made:
        with pytest.raises(BlockPoolError):
            pool.free(record)
    everything = pool.allocate(9, "all", "seed-b")
    assert sorted(everything.blocks + keeper.blocks) == list(range(10))


def test_multi_layer_allocation_gives_one_record_per_layer() -> None:
    pool = BlockPool(10, SHAPE)
    records = pool.allocate_layers("seed-a", {"conv1": 2, "conv2": 3})
    assert [(r.seed_id, r.layer, len(r.blocks)) for r in records] == [
        ("seed-a", "conv1", 2),
        ("seed-a", "conv2", 3),
    ]
    assert len(set(records[0].blocks + records[1].blocks)) == 5
    assert pool.free_count == 5
    assert pool.allocate_layers("seed-a", {}) == []


def test_thousand_allocate_free_seed_cycles_leave_the_pool_full() -> None:
    pool = BlockPool(12, SHAPE)
    layers = {"conv1": 2, "conv2": 5, "head": 1}
    for cycle in range(1000):
        records = pool.allocate_layers(f"seed-{cycle}", layers)
        assert pool.free_count == 12 - 8
        pool.tensor(records[1].blocks[0]).fill_(1.0)
        assert pool.free_seed(f"seed-{cycle}") == 8
    assert pool.free_count == pool.capacity == 12
    assert pool.allocations() == []
    assert torch.count_nonzero(torch.stack([pool.tensor(i) for i in range(12)])) == 0


def test_reconfigure_is_refused_while_anything_is_allocated() -> None:
    pool = BlockPool(4, SHAPE)
    held = pool.allocate(1, "conv1", "seed-a")
    with pytest.raises(PoolBusy) as info:
        pool.reconfigure(8, (5,))
    assert info.value.allocated == 1
    assert (pool.capacity, pool.block_shape, pool.free_count) == (4, SHAPE, 3)
    pool.free(held)
    pool.reconfigure(8, (5,))
    assert (pool.capacity, pool.block_shape, pool.free_count) == (8, (5,), 8)
    assert pool.tensor(7).shape == (5,)
    assert len(pool.allocate(8, "conv1", "seed-a").blocks) == 8


def test_allocation_records_are_frozen() -> None:
    pool = BlockPool(4, SHAPE)
    record = pool.allocate(2, "conv1", "seed-a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.seed_id = "seed-b"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.blocks = (0,)  # type: ignore[misc]
    assert isinstance(record.blocks, tuple)


@pytest.fixture
def eager_thread_switching() -> Iterator[None]:
    """Switch threads every few bytecodes, so unlocked read-modify-writes really interleave."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@pytest.mark.usefixtures("eager_thread_switching")
def test_concurrent_allocation_never_shares_a_block() -> None:
    pool = BlockPool(64, (4,))
    threads_n, rounds = 200, 150
    owners: dict[int, int] = {}
    owners_lock = threading.Lock()
    problems: list[str] = []
    barrier = threading.Barrier(threads_n)

    def claim(record: Allocation, worker_id: int) -> None:
        with owners_lock:
            for index in record.blocks:
                if index in owners:
                    problems.append(f"block {index} given to {worker_id} and {owners[index]}")
                owners[index] = worker_id

    def unclaim(record: Allocation) -> None:
        with owners_lock:
            for index in record.blocks:
                owners.pop(index, None)

    def check_data(record: Allocation, mark: float) -> None:
        for index in record.blocks:
            block = pool.tensor(index)
            if torch.count_nonzero(block) != 0:
                problems.append(f"block {index} handed out dirty")
            block.fill_(mark)
        for index in record.blocks:
            if not torch.all(pool.tensor(index) == mark):
                problems.append(f"block {index} written by another worker")

    def worker(worker_id: int) -> None:
        rng = random.Random(worker_id)
        try:
            barrier.wait()
            for round_no in range(rounds):
                n = rng.randint(1, 8)
                try:
                    record = pool.allocate(n, "layer", f"seed-{worker_id}")
                except PoolExhausted as exc:
                    if exc.requested != n or not 0 <= exc.free < n:
                        problems.append(f"bad exhaustion counts {exc.requested}, {exc.free}")
                    continue
                claim(record, worker_id)
                if round_no % 4 == 0:
                    check_data(record, float(worker_id + 1))
                unclaim(record)
                if pool.free(record) != n:
                    problems.append("free returned the wrong count")
        except Exception as exc:
            problems.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert problems == []
    assert owners == {}
    assert pool.free_count == pool.capacity == 64
    assert pool.allocations() == []
    assert sorted(pool.allocate(64, "all", "check").blocks) == list(range(64))
