"""What a command hands back, and the two ways it is printed (text for people, --json for scripts)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO


@dataclass
class Outcome:
    """data: the JSON-ready result; render: its text form; failure: raised after printing, when the result is
    itself a refusal (explain and preview show why a device would be refused, then exit 2 with its code)."""

    data: Any
    render: Callable[[Any, TextIO], None]
    failure: BaseException | None = None


def print_json(data: Any, out: TextIO) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str), file=out)


def render_fields(data: Any, out: TextIO, indent: int = 0) -> None:
    """A nested dict/list as indented `key: value` lines (for reports such as the scan's)."""
    pad = " " * indent
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, dict | list) and value:
                print(f"{pad}{key}:", file=out)
                render_fields(value, out, indent + 2)
            else:
                print(f"{pad}{key}: {_scalar(value)}", file=out)
    elif isinstance(data, list):
        for item in data:
            if isinstance(item, dict | list):
                print(f"{pad}-", file=out)
                render_fields(item, out, indent + 2)
            else:
                print(f"{pad}- {_scalar(item)}", file=out)
    else:
        print(f"{pad}{_scalar(data)}", file=out)


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)
