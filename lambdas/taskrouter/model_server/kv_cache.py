"""The keys and values a request decodes on: appended in place, and forked from a cached prefix.

transformers' `DynamicLayer` concatenates the whole cache with each new token (a copy of every layer's
keys and values, tens of MB for a 1,000-token prompt): that copy was half of a decoding step on this
CPU. `AppendingLayer` writes each token into spare room instead, doubling the room when it is full,
and hands attention a view of what is filled. A cache forked from a cached prefix starts with the
prefix's tensors as its room, already full: its first write moves them into a room of its own (the
one copy a request makes), so the cached prefix is never written.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

_FIRST_ROOM = 256  # tokens: a prompt's worth at once rather than many small moves


class AppendingLayer(DynamicLayer):
    """A `DynamicLayer` that appends into spare room; `keys`/`values` are views of the filled part."""

    def __init__(self, keys: torch.Tensor | None = None, values: torch.Tensor | None = None) -> None:
        super().__init__()
        self._length = 0
        self._key_room = self._value_room = None
        if keys is not None and values is not None:  # a fork's start: these tensors, their room full
            self.lazy_initialization(keys, values)
            self._key_room, self._value_room, self._length = keys, values, keys.shape[-2]
            self.keys, self.values = keys, values

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self._length + key_states.shape[-2]
        if self._key_room is None or end > self._key_room.shape[-2]:
            room = max(2 * end, _FIRST_ROOM)
            self._key_room = _moved(self._key_room, self._length, key_states, room)
            self._value_room = _moved(self._value_room, self._length, value_states, room)
        self._key_room[..., self._length : end, :] = key_states
        self._value_room[..., self._length : end, :] = value_states
        self._length = end
        self.keys, self.values = self._key_room[..., :end, :], self._value_room[..., :end, :]
        return self.keys, self.values


def _moved(room: torch.Tensor | None, length: int, like: torch.Tensor, size: int) -> torch.Tensor:
    """A room of `size` tokens holding the first `length` of `room`."""
    bigger = like.new_empty((*like.shape[:-2], size, like.shape[-1]))
    if room is not None and length:
        bigger[..., :length, :] = room[..., :length, :]
    return bigger


def appends_in_place(config: Any) -> bool:
    """Whether every layer attends to the whole context, as AppendingLayer keeps it (a sliding-window
    layer keeps only its window: such models keep transformers' own cache)."""
    return all(kind == "full_attention" for kind in getattr(config, "layer_types", None) or ["full_attention"])


def new_cache(config: Any) -> Cache:
    if appends_in_place(config):
        return Cache(layer_class_to_replicate=AppendingLayer)
    return DynamicCache(config=config)


def fork(cache: Cache) -> Cache:
    """A cache that starts as `cache` and grows apart from it, never writing its tensors."""
    if all(type(layer) is AppendingLayer for layer in cache.layers):
        return Cache(layers=[AppendingLayer(layer.keys, layer.values) for layer in cache.layers])
    return copy.deepcopy(cache)
