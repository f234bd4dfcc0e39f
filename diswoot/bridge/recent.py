"""A bounded set of recent ids: what the bridge did lately, remembered without a store read."""

from __future__ import annotations

from collections.abc import Hashable


class RecentIds:
    """The last ``size`` ids added; the oldest is forgotten first (a miss means "ask the store")."""

    def __init__(self, size: int) -> None:
        self._ids: dict[Hashable, None] = {}
        self.size = size

    def add(self, key: Hashable) -> None:
        self._ids.pop(key, None)
        self._ids[key] = None
        if len(self._ids) > self.size:
            del self._ids[next(iter(self._ids))]

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)
