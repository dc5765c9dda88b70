"""The resident-adapter cache: least recently used first out, bounded by a count and/or bytes.

It only keeps the book (which adapters are resident, their sizes, their last use); the engine
does the loading and unloading, all in its model thread, so no model is changed while a batch
runs. Adapters of the batch being prepared are pinned and never chosen for eviction.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterable


class ResidentCache:
    def __init__(self, max_adapters: int | None = None, max_bytes: int | None = None) -> None:
        if max_adapters is not None and max_adapters < 1:
            raise ValueError(f"max_adapters must be >= 1, got {max_adapters}")
        self.max_adapters, self.max_bytes = max_adapters, max_bytes
        self._sizes: OrderedDict[str, int] = OrderedDict()  # name -> bytes, least recent first
        self.hits = self.misses = self.evictions = 0

    def __contains__(self, name: str) -> bool:
        return name in self._sizes

    def __len__(self) -> int:
        return len(self._sizes)

    @property
    def bytes(self) -> int:
        return sum(self._sizes.values())

    def names(self) -> list[str]:
        return list(self._sizes)

    def touch(self, name: str) -> bool:
        """Mark a use; True on a hit."""
        if name in self._sizes:
            self._sizes.move_to_end(name)
            self.hits += 1
            return True
        self.misses += 1
        return False

    def victims(self, incoming: int, pinned: Iterable[str]) -> list[str]:
        """Residents to evict (least recent first) so that one more adapter of `incoming` bytes fits."""
        pinned = set(pinned)
        count, total, out = len(self._sizes), self.bytes, []
        for name, size in self._sizes.items():
            if not self._over(count + 1, total + incoming):
                break
            if name not in pinned:
                out.append(name)
                count, total = count - 1, total - size
        return out

    def fits_alone(self, size: int) -> bool:
        return self.max_bytes is None or size <= self.max_bytes

    def add(self, name: str, size: int) -> None:
        self._sizes[name] = size

    def remove(self, name: str, evicted: bool = True) -> None:
        if self._sizes.pop(name, None) is not None and evicted:
            self.evictions += 1

    def _over(self, count: int, total: int) -> bool:
        return (self.max_adapters is not None and count > self.max_adapters) or (
            self.max_bytes is not None and total > self.max_bytes)
