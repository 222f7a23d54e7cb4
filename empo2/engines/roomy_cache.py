"""Key/value cache layers with room to grow, so that a decode step writes its token in place.

Why: transformers' `DynamicLayer` appends by concatenation, so every forward of a `generate` call
copies each layer's whole cache to add one position: O(length²) copying per call. On the
ScienceWorld protocol (16 rows, ~700-1100 cached positions) those copies were 17 s of an 87 s
rollout phase (cProfile, BENCHMARKS.md "Rollout anatomy"). A `RoomyLayer` keeps its keys and values
at the front of a larger buffer and hands out views of the filled part; an update that fits writes
into the room, one that does not moves to a buffer with a quarter more room (at least 64
positions), so the copying per call is linear in the length.

The values are the same tensors a `DynamicLayer` would hold, only their storage differs. Whatever
replaces a layer's `keys` from outside (transformers' crop or batch selection, a fresh cache) is
noticed at the next update, which then starts a new buffer from it.
"""

from __future__ import annotations

from typing import Iterable

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

MIN_ROOM = 64
"""Free positions a new buffer gets at least (a quarter of its filled length when that is more)."""


class RoomyLayer(DynamicLayer):
    """A `DynamicLayer` whose update writes into spare room instead of concatenating."""

    _key_buffer: torch.Tensor | None = None
    _value_buffer: torch.Tensor | None = None
    _handed_out: torch.Tensor | None = None  # the `keys` view the last update set

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        held = self.keys.shape[-2] if self.keys is not None and self.keys.numel() else 0
        filled = held + key_states.shape[-2]
        if self.keys is not self._handed_out or self._key_buffer.shape[-2] < filled:
            self._move(held, filled, key_states, value_states)
        self._key_buffer[:, :, held:filled] = key_states
        self._value_buffer[:, :, held:filled] = value_states
        self.keys = self._handed_out = self._key_buffer[:, :, :filled]
        self.values = self._value_buffer[:, :, :filled]
        return self.keys, self.values

    def _move(self, held: int, filled: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """A new buffer with room for `filled` positions and more, holding the first `held`."""
        room = filled + max(MIN_ROOM, filled // 4)
        buffers = []
        for old, new in ((self.keys, key_states), (self.values, value_states)):
            shape = list(new.shape)
            shape[-2] = room
            buffer = new.new_empty(shape)
            if held:
                buffer[:, :, :held] = old
            buffers.append(buffer)
        self._key_buffer, self._value_buffer = buffers


    def adopt(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Hold `keys` and `values` as they are, without copying and without room: the first update
        moves them to a buffer with room. Tensors a cache is built from (gathered rows, stacked
        caches) are fresh, so building it costs no copy; they are never written into."""
        self.lazy_initialization(keys, values)
        self.keys = self._handed_out = self._key_buffer = keys
        self.values = self._value_buffer = values


def roomy_cache(layers: Iterable[tuple[torch.Tensor, torch.Tensor]] = ()) -> DynamicCache:
    """A `DynamicCache` of `RoomyLayer`s holding `layers` ((keys, values) per layer, adopted without
    a copy); layers beyond them are added as the model first writes them (an empty cache for a
    fresh `generate`)."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = RoomyLayer
    for keys, values in layers:
        layer = RoomyLayer()
        layer.adopt(keys, values)
        cache.layers.append(layer)
    return cache
