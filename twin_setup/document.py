"""IoT Hub's rules for twin documents, as plain functions over JSON values. Pure.

Source: IoT Hub developer guide, "Understand and use device twins": keys are UTF-8, at most 1 KB, without
control characters, '.', '$' or space; values are booleans, numbers, strings (at most 4 KB), objects and
arrays; integers lie in [-4503599627370496, 4503599627370495]; objects nest at most 10 deep; the size of
tags / desired / reported is the sum over properties of key length plus value length, where strings count
their UTF-8 bytes without control characters, numbers 8 bytes, booleans 4 bytes.

The canonical form (sorted keys, no whitespace, UTF-8) is what the configuration hash is computed over, so
the hash does not depend on the order in which a template or an override lists its keys.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from typing import Any

from twin_setup.settings import MAX_INT, MIN_INT, TwinLimits

FORBIDDEN_KEY_CHARACTERS = frozenset(".$ ")


class DocumentError(ValueError):
    """A JSON value that IoT Hub would not accept in a twin; the message names the path."""


# Unicode category Cc is exactly these 65 code points; one regex pass replaces a per-character category
# look-up, which cost about 1 ms per device twin (twin setup checks every document it writes).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_BAD_KEY_CHARACTER = re.compile("[.$ \x00-\x1f\x7f-\x9f]")


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) == "Cc"


def _text_size(text: str) -> int:
    size = len(text.encode())
    if _CONTROL.search(text):
        size -= len("".join(_CONTROL.findall(text)).encode())
    return size


def size_of(value: Any) -> int:
    """Twin size of a JSON value, as IoT Hub counts it."""
    if isinstance(value, dict):
        return sum(_text_size(k) + size_of(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(size_of(v) for v in value)
    if isinstance(value, str):
        return _text_size(value)
    if isinstance(value, bool):
        return 4
    if isinstance(value, int | float):
        return 8
    return 0


def key_problem(key: Any, limits: TwinLimits) -> str | None:
    """Why IoT Hub would refuse `key` as a property or tag name, or None."""
    if not isinstance(key, str) or not key:
        return "empty name"
    if len(key.encode()) > limits.max_key_bytes:
        return f"name longer than {limits.max_key_bytes} bytes"
    if _BAD_KEY_CHARACTER.search(key):
        bad = sorted({repr(ch) for ch in key if ch in FORBIDDEN_KEY_CHARACTERS or _is_control(ch)})
        return f"name contains {', '.join(bad)} (IoT Hub refuses '.', '$', space and control characters)"
    return None


def check_twin_section(value: Any, limits: TwinLimits, where: str = "", depth: int = 0,
                       allow_null: bool = False) -> None:
    """Raise DocumentError when `value` (a desired-properties object, depth 0) breaks a twin rule.

    allow_null: overrides use null to delete a key; a finished document never contains null."""
    if isinstance(value, dict):
        if depth > limits.max_depth:
            raise DocumentError(f"{where or 'document'}: nested deeper than {limits.max_depth} levels")
        for key, child in value.items():
            problem = key_problem(key, limits)
            path = f"{where}.{key}" if where else str(key)
            if problem:
                raise DocumentError(f"{path}: {problem}")
            check_twin_section(child, limits, path, depth + 1, allow_null)
    elif isinstance(value, list):
        if depth > limits.max_depth:
            raise DocumentError(f"{where}: nested deeper than {limits.max_depth} levels")
        for index, item in enumerate(value):
            if item is None:
                raise DocumentError(f"{where}[{index}]: null inside an array")
            check_twin_section(item, limits, f"{where}[{index}]", depth + 1, allow_null)
    elif value is None:
        if not allow_null:
            raise DocumentError(f"{where}: null (a template value must not be null)")
    elif isinstance(value, bool):
        return
    elif isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            raise DocumentError(f"{where}: integer outside [{MIN_INT}, {MAX_INT}]")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise DocumentError(f"{where}: not a finite number")
    elif isinstance(value, str):
        if len(value.encode()) > limits.max_string_bytes:
            raise DocumentError(f"{where}: string longer than {limits.max_string_bytes} bytes")
    else:
        raise DocumentError(f"{where}: {type(value).__name__} is not a JSON value")


def canonical(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def content_hash(value: Any) -> str:
    """SHA-256 (hex) of the canonical JSON."""
    return hashlib.sha256(canonical(value)).hexdigest()


