"""HTTP trigger route templates, matched the way the Functions host (ASP.NET routing) matches them.

Supported: literal segments (case-insensitive), `{name}`, `{name?}` and `{name=default}` (trailing),
`{*rest}` catch-all, inline constraints `{id:int}`, `{x:alpha}`, `{x:guid}`, `{x:bool}`, `{x:long}`,
`{x:double}`, `{x:minlength(2)}`, `{x:maxlength(8)}`, `{x:length(4)}`, `{x:min(1)}`, `{x:max(9)}`,
`{x:range(1,9)}`, `{x:regex(...)}`, several chained with `:`, and segments mixing literals and parameters
(`{file}.{ext}`). A value that fails a constraint makes the route not match (404), as in ASP.NET.
A request whose path matches but whose method the trigger does not list also gets 404 (not 405): that is
what the Functions host answers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

T = TypeVar("T")

_DOUBLE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
Constraint = Callable[[str], bool]


@dataclass(frozen=True)
class RouteTemplate:
    template: str
    pattern: re.Pattern[str]
    constraints: dict[str, tuple[Constraint, ...]]
    defaults: dict[str, str]
    precedence: tuple[int, ...]

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path.strip("/"))
        if found is None:
            return None
        values = {name: value for name, value in found.groupdict().items() if value is not None}
        for name, checks in self.constraints.items():
            if name in values and not all(check(values[name]) for check in checks):
                return None
        return {**self.defaults, **values}


def compile_route(template: str) -> RouteTemplate:
    """Compile a route template; ValueError for templates ASP.NET would refuse too."""
    segments = template.strip("/").split("/") if template.strip("/") else []
    regex = ""
    constraints: dict[str, tuple[Constraint, ...]] = {}
    defaults: dict[str, str] = {}
    precedence: list[int] = []
    for index, segment in enumerate(segments):
        if not segment:
            raise ValueError(f"route '{template}': empty segment")
        separator = "/" if index else ""
        tokens = _tokens(segment, template)
        if len(tokens) == 1 and tokens[0][0] == "param":
            name, optional, catch_all, default, checks = _parse_parameter(tokens[0][1], template)
            if (optional or catch_all or default is not None) and index != len(segments) - 1:
                raise ValueError(f"route '{template}': optional or catch-all parameter '{name}' must be last")
            constraints[name] = checks
            if default is not None:
                defaults[name] = default
            group = f"(?P<{name}>{'.*' if catch_all else '[^/]+'})"
            if optional or catch_all or default is not None:
                regex += f"(?:{separator}{group})?"
                precedence.append(5 if catch_all else 4)
            else:
                regex += separator + group
                precedence.append(2 if checks else 3)
            continue
        regex += separator
        for kind, text in tokens:
            if kind == "literal":
                regex += re.escape(text)
                continue
            name, optional, catch_all, default, checks = _parse_parameter(text, template)
            if optional or catch_all or default is not None:
                raise ValueError(f"route '{template}': '{{{text}}}' cannot be optional inside '{segment}'")
            constraints[name] = checks
            regex += f"(?P<{name}>[^/]+?)"
        precedence.append(1 if any(kind == "param" for kind, _ in tokens) else 0)
    return RouteTemplate(template, re.compile(regex, re.IGNORECASE), constraints, defaults, tuple(precedence))


def _tokens(segment: str, template: str) -> list[tuple[str, str]]:
    """Split a segment into literals and parameters; `{{` and `}}` stand for literal braces, as in ASP.NET."""
    tokens: list[tuple[str, str]] = []
    text, in_param, i = "", False, 0
    while i < len(segment):
        pair = segment[i:i + 2]
        if pair in ("{{", "}}"):
            text += pair[0]
            i += 2
            continue
        char = segment[i]
        if char == "{" and not in_param:
            if text:
                tokens.append(("literal", text))
            text, in_param = "", True
        elif char == "}" and in_param:
            if not text:
                raise ValueError(f"route '{template}': empty parameter in '{segment}'")
            tokens.append(("param", text))
            text, in_param = "", False
        elif char in "{}":
            raise ValueError(f"route '{template}': unbalanced braces in '{segment}'")
        else:
            text += char
        i += 1
    if in_param:
        raise ValueError(f"route '{template}': unbalanced braces in '{segment}'")
    if text:
        tokens.append(("literal", text))
    return tokens


class Router(Generic[T]):
    """Routes in precedence order: literals before parameters before catch-alls, then registration order."""

    def __init__(self, routes: Iterable[tuple[str, T]]):
        compiled = [(compile_route(template), target) for template, target in routes]
        self._routes = sorted(compiled, key=lambda rt: rt[0].precedence)

    def candidates(self, path: str) -> list[tuple[T, dict[str, str]]]:
        """Every route matching path, most specific first (the caller filters by method)."""
        matches = []
        for route, target in self._routes:
            values = route.match(path)
            if values is not None:
                matches.append((target, values))
        return matches


def _parse_parameter(body: str, template: str) -> tuple[str, bool, bool, str | None, tuple[Constraint, ...]]:
    catch_all = body.startswith("*")
    body = body.lstrip("*")
    default = None
    if "=" in body:
        body, _, default = body.partition("=")
    optional = body.endswith("?")
    body = body.rstrip("?")
    name, *constraint_texts = _split_constraints(body)
    if not re.fullmatch(r"[A-Za-z_]\w*", name):
        raise ValueError(f"route '{template}': '{name}' is not a valid parameter name")
    return name, optional, catch_all, default, tuple(_constraint(c, template) for c in constraint_texts)


def _split_constraints(body: str) -> list[str]:
    """Split `name:c1:c2(args)` on colons that are outside parentheses (regex(...) may hold colons)."""
    parts, depth, current = [], 0, ""
    for char in body:
        if char == ":" and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    return [*parts, current]


def _constraint(text: str, template: str) -> Constraint:
    name, _, args = text.partition("(")
    args = args[:-1] if args.endswith(")") else args
    numbers = [a.strip() for a in args.split(",")] if args else []
    simple: dict[str, Constraint] = {
        "int": _is_int(-(2**31), 2**31 - 1),
        "long": _is_int(-(2**63), 2**63 - 1),
        "bool": lambda v: v.lower() in ("true", "false"),
        "alpha": lambda v: v.isascii() and v.isalpha(),
        "guid": _is_guid,
        "double": lambda v: _DOUBLE.fullmatch(v) is not None,
        "float": lambda v: _DOUBLE.fullmatch(v) is not None,
        "decimal": lambda v: _DOUBLE.fullmatch(v) is not None,
        "datetime": _is_datetime,
    }
    lowered = name.lower()
    if lowered in simple and not numbers:
        return simple[lowered]
    try:
        if lowered == "minlength":
            return lambda v, n=int(numbers[0]): len(v) >= n
        if lowered == "maxlength":
            return lambda v, n=int(numbers[0]): len(v) <= n
        if lowered == "length":
            low, high = (int(numbers[0]), int(numbers[-1]))
            return lambda v: low <= len(v) <= high
        if lowered == "min":
            return lambda v, n=int(numbers[0]): _is_int(n, 2**63)(v)
        if lowered == "max":
            return lambda v, n=int(numbers[0]): _is_int(-(2**63), n)(v)
        if lowered == "range":
            return _is_int(int(numbers[0]), int(numbers[1]))
        if lowered == "regex":
            pattern = re.compile(args, re.IGNORECASE)
            return lambda v: pattern.search(v) is not None
    except (IndexError, ValueError, re.error) as exc:
        raise ValueError(f"route '{template}': bad constraint '{text}': {exc}") from None
    raise ValueError(f"route '{template}': unknown route constraint '{text}'")


def _is_int(low: int, high: int) -> Constraint:
    def check(value: str) -> bool:
        return re.fullmatch(r"[+-]?\d+", value) is not None and low <= int(value) <= high
    return check


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True
