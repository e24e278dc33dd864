"""The keys and values a request decodes on: appended in place, and forked from a cached prefix.

transformers' `DynamicLayer` concatenates the whole cache with each new token (a copy of every layer's
keys and values, tens of MB for a 1,000-token prompt): that copy was half of a decoding step on this
CPU. `AppendingLayer` writes each token into spare room instead, doubling the room when it is full,
and hands attention a view of what is filled. A cache forked from a cached prefix starts with the
prefix's tensors as its room, already full: its first write moves them into a room of its own (the
one copy a request makes), so the cached prefix is never written. A prefix's own cache is written
once, so it gets room for exactly its tokens (`new_cache(..., exact=True)`).

`PrefixCache` keeps those prefixes, least recently used first out, within a bound on the bytes their
keys and values hold (limits.py: TASKROUTER_MODEL_PREFIX_CACHE_MB).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

_FIRST_ROOM = 256  # tokens: a prompt's worth at once rather than many small moves


class AppendingLayer(DynamicLayer):
    """A `DynamicLayer` that appends into spare room; `keys`/`values` are views of the filled part."""

    exact = False  # room for exactly the tokens of each write (a prefix, written once), or spare room

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
            room = end if self.exact else max(2 * end, _FIRST_ROOM)
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


class _ExactLayer(AppendingLayer):
    exact = True


def appends_in_place(config: Any) -> bool:
    """Whether every layer attends to the whole context, as AppendingLayer keeps it (a sliding-window
    layer keeps only its window: such models keep transformers' own cache)."""
    return all(kind == "full_attention" for kind in getattr(config, "layer_types", None) or ["full_attention"])


def new_cache(config: Any, *, exact: bool = False) -> Cache:
    """An empty cache; `exact`: one that is written once (a prefix), given no spare room."""
    if appends_in_place(config):
        return Cache(layer_class_to_replicate=_ExactLayer if exact else AppendingLayer)
    return DynamicCache(config=config)  # grows by concatenation: it never holds spare room


def fork(cache: Cache) -> Cache:
    """A cache that starts as `cache` and grows apart from it, never writing its tensors."""
    if all(isinstance(layer, AppendingLayer) for layer in cache.layers):
        return Cache(layers=[AppendingLayer(layer.keys, layer.values) for layer in cache.layers])
    return copy.deepcopy(cache)


def cache_bytes(cache: Cache) -> int:
    """The memory a cache's keys and values hold, spare room included."""
    storages = {}
    for layer in cache.layers:
        for tensor in (layer.keys, layer.values):
            if tensor is not None:
                storage = tensor.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


@dataclass(frozen=True)
class Prefix:
    ids: tuple[int, ...]
    cache: Cache  # the keys and values of `ids`, never written to
    bytes: int


class PrefixCache:
    """Prefixes by key (the engine's: adapter and system text), within `max_bytes` in all: the least
    recently used go first; a prefix larger than the bound alone is not kept."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._prefixes: OrderedDict[Hashable, Prefix] = OrderedDict()

    @property
    def held_bytes(self) -> int:
        return sum(prefix.bytes for prefix in self._prefixes.values())

    def __len__(self) -> int:
        return len(self._prefixes)

    def get(self, key: Hashable) -> Prefix | None:
        prefix = self._prefixes.get(key)
        if prefix is not None:
            self._prefixes.move_to_end(key)
        return prefix

    def put(self, key: Hashable, ids: tuple[int, ...], cache: Cache) -> Prefix:
        prefix = Prefix(ids, cache, cache_bytes(cache))
        if prefix.bytes > self.max_bytes:
            return prefix  # served to this request, kept for none
        self._prefixes.pop(key, None)
        while self._prefixes and self.held_bytes + prefix.bytes > self.max_bytes:
            self._prefixes.popitem(last=False)
        self._prefixes[key] = prefix
        return prefix
