"""A fixed pool of memory blocks, handed to seeds layer by layer.

Every block is allocated once, up front, so germinating a seed never asks the
allocator for memory mid-training and cannot fragment it. The pool recognises
its own allocation records by identity rather than by value: after a free, the
same blocks may go to a new record equal to the old one field for field, and a
stale copy must not be able to free them.

A tensor from `tensor` is a view into the pool; holding it past the free of
its block is the caller's bug, which the pool cannot see.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from kasmina.errors import KasminaError


class BlockPoolError(KasminaError):
    """A misuse of the block pool; the pool was left unchanged."""


class PoolExhausted(BlockPoolError):
    def __init__(self, requested: int, free: int) -> None:
        self.requested = requested
        self.free = free
        super().__init__(f"block pool exhausted: requested {requested} blocks, {free} free")


class DoubleFree(BlockPoolError):
    def __init__(self, allocation: Allocation) -> None:
        self.allocation = allocation
        super().__init__(
            f"blocks {list(allocation.blocks)} of seed {allocation.seed_id!r} layer "
            f"{allocation.layer!r} were already freed"
        )


class ForeignFree(BlockPoolError):
    """A free of blocks that another seed holds, or of a record this pool never issued."""

    def __init__(self, allocation: Allocation, reason: str) -> None:
        self.allocation = allocation
        super().__init__(
            f"refused to free blocks {list(allocation.blocks)} for seed "
            f"{allocation.seed_id!r} layer {allocation.layer!r}: {reason}"
        )


class PoolBusy(BlockPoolError):
    def __init__(self, allocated: int) -> None:
        self.allocated = allocated
        super().__init__(
            f"cannot reconfigure the block pool while {allocated} blocks are allocated"
        )


@dataclass(frozen=True)
class Allocation:
    """The receipt for blocks of one layer of one seed; only the issuing record frees them."""

    seed_id: str
    layer: str
    blocks: tuple[int, ...]


def _check_shape(num_blocks: int, block_shape: tuple[int, ...]) -> tuple[int, ...]:
    if num_blocks < 1:
        raise BlockPoolError(f"a block pool needs at least 1 block, got {num_blocks}")
    shape = tuple(int(dim) for dim in block_shape)
    if not shape or any(dim < 1 for dim in shape):
        raise BlockPoolError(f"block shape must be non-empty and positive, got {shape}")
    return shape


def _check_count(n: int, layer: str) -> None:
    if n < 1:
        raise BlockPoolError(f"layer {layer!r} must request at least 1 block, got {n}")


class BlockPool:
    """Blocks of one shape, dtype and device, shared by all seeds under one lock.

    Freed blocks are zeroed before they rejoin the free list, inside the lock,
    so no seed can ever read another seed's data from a fresh allocation.
    """

    def __init__(
        self,
        num_blocks: int,
        block_shape: tuple[int, ...],
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        self._lock = threading.Lock()
        self._dtype = dtype
        self._device = torch.device(device)
        self._live: dict[int, Allocation] = {}
        self._freed: weakref.WeakValueDictionary[int, Allocation] = weakref.WeakValueDictionary()
        self._owner: list[Allocation | None] = []
        self._free: list[int] = []
        self._storage = torch.empty(0)
        self._build(num_blocks, _check_shape(num_blocks, block_shape))

    def _build(self, num_blocks: int, shape: tuple[int, ...]) -> None:
        self._storage = torch.zeros((num_blocks, *shape), dtype=self._dtype, device=self._device)
        self._owner = [None] * num_blocks
        self._free = list(range(num_blocks - 1, -1, -1))

    @property
    def capacity(self) -> int:
        with self._lock:
            return len(self._owner)

    @property
    def free_count(self) -> int:
        with self._lock:
            return len(self._free)

    @property
    def block_shape(self) -> tuple[int, ...]:
        with self._lock:
            return tuple(self._storage.shape[1:])

    def allocations(self, seed_id: str | None = None) -> list[Allocation]:
        with self._lock:
            return [a for a in self._live.values() if seed_id is None or a.seed_id == seed_id]

    def tensor(self, index: int) -> torch.Tensor:
        with self._lock:
            if not 0 <= index < len(self._owner):
                raise BlockPoolError(f"block index {index} outside 0..{len(self._owner) - 1}")
            return self._storage[index]

    def allocate(self, n: int, layer: str, seed_id: str) -> Allocation:
        """`n` blocks for one layer, or `PoolExhausted` with nothing taken."""
        return self.allocate_layers(seed_id, {layer: n})[0]

    def allocate_layers(self, seed_id: str, layers: Mapping[str, int]) -> list[Allocation]:
        """Blocks for several layers at once: a seed gets all its layers or none of them."""
        counts = dict(layers)
        for layer, n in counts.items():
            _check_count(n, layer)
        with self._lock:
            requested = sum(counts.values())
            if requested > len(self._free):
                raise PoolExhausted(requested, len(self._free))
            taken: list[Allocation] = []
            try:
                for layer, n in counts.items():
                    taken.append(self._take(n, layer, seed_id))
            except BaseException:
                for allocation in taken:
                    self._release(allocation)
                raise
            return taken

    def _take(self, n: int, layer: str, seed_id: str) -> Allocation:
        """Build the record before touching any state, so a failure here leaks nothing."""
        allocation = Allocation(seed_id, layer, tuple(reversed(self._free[-n:])))
        del self._free[-n:]
        for index in allocation.blocks:
            self._owner[index] = allocation
        self._live[id(allocation)] = allocation
        return allocation

    def _release(self, allocation: Allocation) -> int:
        blocks = allocation.blocks
        self._storage.index_fill_(0, torch.tensor(blocks, device=self._device), 0)
        del self._live[id(allocation)]
        self._freed[id(allocation)] = allocation
        for index in blocks:
            self._owner[index] = None
        self._free.extend(reversed(blocks))
        return len(blocks)

    def free(self, allocation: Allocation) -> int:
        """Return a record's blocks, zeroed; refuses stale, forged and foreign records."""
        with self._lock:
            if self._live.get(id(allocation)) is allocation:
                return self._release(allocation)
            if self._freed.get(id(allocation)) is allocation:
                raise DoubleFree(allocation)
            raise ForeignFree(allocation, self._foreign_reason(allocation))

    def _foreign_reason(self, allocation: Allocation) -> str:
        for index in allocation.blocks:
            owner = self._owner[index] if 0 <= index < len(self._owner) else None
            if owner is not None and owner.seed_id != allocation.seed_id:
                return f"block {index} belongs to seed {owner.seed_id!r}"
        return "this pool did not issue that allocation record"

    def free_seed(self, seed_id: str) -> int:
        """Free every layer of a seed, e.g. when it is pruned; returns the blocks freed."""
        with self._lock:
            mine = [a for a in self._live.values() if a.seed_id == seed_id]
            return sum(self._release(allocation) for allocation in mine)

    def reconfigure(self, num_blocks: int, block_shape: tuple[int, ...]) -> None:
        """Replace every block; refused while any is allocated, since their views would dangle."""
        shape = _check_shape(num_blocks, block_shape)
        with self._lock:
            allocated = len(self._owner) - len(self._free)
            if allocated:
                raise PoolBusy(allocated)
            self._build(num_blocks, shape)


__all__ = [
    "Allocation",
    "BlockPool",
    "BlockPoolError",
    "DoubleFree",
    "ForeignFree",
    "PoolBusy",
    "PoolExhausted",
]
