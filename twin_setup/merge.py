"""The configuration merge: template < facility `*` override < facility+type override. Pure.

Semantics (those of JSON Merge Patch, RFC 7386, which is also how IoT Hub applies a twin PATCH):
- an object in the override merges key by key into the object below it (recursively);
- a scalar or an array in the override replaces what was below it (arrays are never merged element-wise);
- `null` in the override deletes the key below it (deleting a key that is absent is a no-op);
- an object in the override that lands on a scalar or an array replaces it (its own nulls are dropped).
Inputs are never modified; the result shares no mutable structure with them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Path = tuple[str, ...]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: the result of applying `patch` to `target` (neither is modified)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def merge_all(base: dict[str, Any], patches: Iterable[dict[str, Any]]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for patch in patches:
        result = merge_patch(result, patch)
    return result


@dataclass(frozen=True)
class Layer:
    """One input of the merge: its name for provenance ("template", "override FAC03/*") and its document."""

    name: str
    document: dict[str, Any]


@dataclass
class Merged:
    document: dict[str, Any]
    sources: dict[Path, str] = field(default_factory=dict)  # leaf path -> layer that set it
    deleted: dict[Path, str] = field(default_factory=dict)  # path removed by a null -> layer that removed it


def _drop_under(paths: dict[Path, str], prefix: Path) -> None:
    for path in [p for p in paths if p[: len(prefix)] == prefix]:
        del paths[path]


def _record(merged: Merged, value: Any, path: Path, layer: str) -> None:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            if child is not None:
                _record(merged, child, (*path, key), layer)
    else:
        merged.sources[path] = layer


def _apply(merged: Merged, target: dict[str, Any], patch: dict[str, Any], path: Path, layer: str) -> None:
    for key, value in patch.items():
        here = (*path, key)
        if value is None:
            if key in target:
                del target[key]
                _drop_under(merged.sources, here)
                merged.deleted[here] = layer
            continue
        merged.deleted.pop(here, None)
        if isinstance(value, dict):
            if not isinstance(target.get(key), dict):
                _drop_under(merged.sources, here)
                target[key] = {}
            _apply(merged, target[key], value, here, layer)
            if target[key]:
                merged.sources.pop(here, None)  # an object with members is not a leaf
            else:
                merged.sources.setdefault(here, layer)  # an empty object is a leaf value
        else:
            _drop_under(merged.sources, here)
            target[key] = copy.deepcopy(value)
            merged.sources[here] = layer


def merge_layers(layers: Iterable[Layer]) -> Merged:
    """Merge the layers in order, recording which layer each leaf value comes from (for the preview)."""
    layers = list(layers)
    merged = Merged({})
    if not layers:
        return merged
    merged.document = copy.deepcopy(layers[0].document)
    _record(merged, merged.document, (), layers[0].name)
    merged.sources.pop((), None)
    for layer in layers[1:]:
        _apply(merged, merged.document, layer.document, (), layer.name)
    return merged


def dotted(path: Path) -> str:
    return ".".join(path)
