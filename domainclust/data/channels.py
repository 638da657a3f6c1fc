"""Channels matched by name across sensors: which source channel feeds each wanted channel.

Stores name their channels (`store.attrs["channels"]`; the geotiff adapter uses common band
names, so Landsat 7/8 and Sentinel-2 stores share them) and networks record theirs. Matching by
name lets a network run on a store that holds its channels in another order or among others,
and lets a new network start from one trained on another channel set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from domainclust.errors import DomainclustError


@dataclass(frozen=True)
class ChannelMap:
    """For each wanted channel, its index among the available ones (None: not there)."""

    wanted: tuple[str, ...]
    available: tuple[str, ...]
    source: tuple[int | None, ...]

    @property
    def new(self) -> tuple[str, ...]:
        """Wanted channels the available set lacks."""
        return tuple(w for w, s in zip(self.wanted, self.source) if s is None)

    @property
    def dropped(self) -> tuple[str, ...]:
        """Available channels no wanted channel takes."""
        used = set(self.source)
        return tuple(a for i, a in enumerate(self.available) if i not in used)

    @property
    def identity(self) -> bool:
        return self.wanted == self.available

    def describe(self) -> str:
        """One line: `red <- red, nir <- nir (new: swir1; dropped: coastal)`."""
        pairs = ", ".join(f"{w} <- {self.available[s]}" if s is not None else f"{w} <- (new)"
                          for w, s in zip(self.wanted, self.source))
        extra = [f"new: {', '.join(self.new)}"] if self.new else []
        extra += [f"dropped: {', '.join(self.dropped)}"] if self.dropped else []
        return pairs + (f" ({'; '.join(extra)})" if extra else "")

    def as_record(self) -> dict[str, Any]:
        """JSON/YAML-ready: which source channel feeds each wanted one, which are new/dropped."""
        return {"channels": {w: (self.available[s] if s is not None else None)
                             for w, s in zip(self.wanted, self.source)},
                "new": list(self.new), "dropped": list(self.dropped)}


def map_channels(*, wanted: Sequence[str], available: Sequence[str]) -> ChannelMap:
    """Match `wanted` to `available` by name; refuses a name given twice on either side."""
    for side, names in (("wanted", wanted), ("available", available)):
        twice = sorted({n for n in names if list(names).count(n) > 1})
        if twice:
            raise DomainclustError(f"channel name(s) {twice} appear twice among the {side} "
                                   f"channels {list(names)}; channels are matched by name")
    index = {name: i for i, name in enumerate(available)}
    return ChannelMap(wanted=tuple(wanted), available=tuple(available),
                      source=tuple(index.get(w) for w in wanted))


def select_channels(*, wanted: Sequence[str], available: Sequence[str], needed_by: str,
                    held_by: str) -> ChannelMap:
    """The map that takes `wanted` out of `available`; refuses any wanted channel not there,
    naming it, `needed_by` (a network) and `held_by` (a store)."""
    mapping = map_channels(wanted=wanted, available=available)
    if mapping.new:
        raise DomainclustError(
            f"{needed_by} needs channel(s) {list(mapping.new)} that {held_by} lacks (it has "
            f"{list(available)}); channels are matched by name"
        )
    return mapping
