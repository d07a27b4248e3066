"""The IoT Hub query language over device twins: a parser and an evaluator. Pure.

Supported (from "IoT Hub query language" and "Queries for IoT Hub device and module twins"):
`SELECT [TOP n] * | projection [AS alias], ... FROM devices [WHERE condition] [GROUP BY path, ...]`,
projections are attribute paths or COUNT() / SUM / AVG / MIN / MAX(path); conditions use = != <> < > <= >=,
IN / NIN [constants], AND, OR, NOT, parentheses, + - * / %, IS_DEFINED(path) and string, number (decimal or
0x hex), true, false, null and undefined constants. Strings compare ordinally, so ISO-8601 timestamps compare
as times. As in IoT Hub, a comparison between different types or with a missing property is undefined, and
only conditions that evaluate to true select a twin. Property names resolve exactly first, then ignoring
case (the docs query `SELECT DeviceId ...`). Anything else is a QueryError (HTTP 400).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MAX_QUERY_LENGTH = 8192
AGGREGATES = ("COUNT", "SUM", "AVG", "MIN", "MAX")
KEYWORDS = {
    "SELECT",
    "TOP",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "NIN",
    "TRUE",
    "FALSE",
    "NULL",
    "UNDEFINED",
}
COMPARISONS = {"=", "!=", "<>", "<", ">", "<=", ">="}
TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<number>0[xX][0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    |(?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    |(?P<ident>[A-Za-z_$][A-Za-z0-9_$]*)
    |(?P<op><=|>=|<>|!=|[=<>+\-*/%(),.\[\]])""",
    re.VERBOSE | re.DOTALL,
)
ESCAPES = {"'": "'", '"': '"', "\\": "\\", "/": "/", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


class _Undefined:
    def __repr__(self) -> str:
        return "undefined"


UNDEFINED: Any = _Undefined()


class QueryError(ValueError):
    def __init__(self, message: str, position: int | None = None):
        where = f"Line 1:{position + 1} " if position is not None else ""
        super().__init__(f"{where}{message}")
        self.position = position


@dataclass(frozen=True)
class Token:
    kind: str  # number, string, ident, op, end
    text: str
    value: Any
    pos: int


@dataclass(frozen=True)
class SelectItem:
    expr: tuple  # ("path", names) or ("agg", FUNC, names | None)
    alias: str | None


@dataclass(frozen=True)
class Query:
    text: str
    select: tuple[SelectItem, ...] | None  # None: SELECT *
    where: tuple | None
    top: int | None = None
    group_by: tuple[tuple[str, ...], ...] = field(default=())

    @property
    def is_aggregate(self) -> bool:
        return bool(self.group_by) or any(i.expr[0] == "agg" for i in self.select or ())

    @property
    def item_type(self) -> str:
        """x-ms-item-type: whole twins for SELECT *, raw JSON objects otherwise."""
        return "twin" if self.select is None else "raw"


def _unescape(body: str, pos: int) -> str:
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2 : i + 6]):
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        elif nxt in ESCAPES:
            out.append(ESCAPES[nxt])
            i += 2
        else:
            raise QueryError(f"invalid escape sequence '\\{nxt}' in string", pos + i + 1)
    return "".join(out)


def tokenize(text: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(text):
        match = TOKEN.match(text, pos)
        if not match:
            raise QueryError(f"unexpected character at input '{text[pos : pos + 10]}'", pos)
        kind, raw = match.lastgroup, match.group()
        if kind == "number":
            if raw[:2].lower() == "0x":
                value: Any = int(raw, 16)
            else:
                value = float(raw) if any(c in raw for c in ".eE") else int(raw)
            tokens.append(Token("number", raw, value, pos))
        elif kind == "string":
            tokens.append(Token("string", raw, _unescape(raw[1:-1], pos), pos))
        elif kind in ("ident", "op"):
            tokens.append(Token(kind, raw, raw, pos))
        pos = match.end()
    tokens.append(Token("end", "", None, len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def is_kw(self, *words: str) -> bool:
        return self.tok.kind == "ident" and self.tok.text.upper() in words

    def is_op(self, *ops: str) -> bool:
        return self.tok.kind == "op" and self.tok.text in ops

    def expect_kw(self, word: str) -> None:
        if not self.is_kw(word):
            self.fail(f"expected {word}")
        self.advance()

    def expect_op(self, op: str) -> None:
        if not self.is_op(op):
            self.fail(f"expected '{op}'")
        self.advance()

    def fail(self, message: str):
        shown = self.tok.text or "<end of query>"
        raise QueryError(f"{message} at input '{shown}'", self.tok.pos)

    # query := SELECT [TOP n] select_list FROM devices [WHERE expr] [GROUP BY path, ...]
    def query(self) -> Query:
        self.expect_kw("SELECT")
        top = None
        if self.is_kw("TOP"):
            self.advance()
            if self.tok.kind != "number" or not isinstance(self.tok.value, int) or self.tok.value < 0:
                self.fail("TOP needs a non-negative integer")
            top = self.advance().value
        select = self.select_list()
        self.expect_kw("FROM")
        self.source()
        where = None
        if self.is_kw("WHERE"):
            self.advance()
            where = self.expr()
        group_by: list[tuple[str, ...]] = []
        if self.is_kw("GROUP"):
            self.advance()
            self.expect_kw("BY")
            group_by.append(self.path())
            while self.is_op(","):
                self.advance()
                group_by.append(self.path())
        if self.tok.kind != "end":
            self.fail("unexpected input")
        query = Query(self.text, select, where, top, tuple(group_by))
        if query.is_aggregate and select is None:
            raise QueryError("SELECT * cannot be combined with GROUP BY")
        if query.is_aggregate:
            grouped = set(group_by)
            for item in select or ():
                if item.expr[0] == "path" and item.expr[1] not in grouped:
                    raise QueryError(f"'{'.'.join(item.expr[1])}' must appear in GROUP BY or in an aggregate")
        return query

    def source(self) -> None:
        if not self.is_kw("DEVICES"):
            self.fail("expected FROM devices")
        self.advance()
        if self.is_op("."):
            self.advance()
            name = self.advance().text
            raise QueryError(f"FROM devices.{name} is not supported by the local IoT Hub emulator")

    def select_list(self) -> tuple[SelectItem, ...] | None:
        if self.is_op("*"):
            self.advance()
            return None
        items = [self.select_item()]
        while self.is_op(","):
            self.advance()
            items.append(self.select_item())
        return tuple(items)

    def select_item(self) -> SelectItem:
        if self.tok.kind == "ident" and self.tok.text.upper() in AGGREGATES and self.tokens[self.i + 1].text == "(":
            func = self.advance().text.upper()
            self.expect_op("(")
            arg = None
            if func == "COUNT":
                if not self.is_op(")"):
                    self.fail("COUNT takes no argument")
            else:
                arg = self.path()
            self.expect_op(")")
            expr: tuple = ("agg", func, arg)
        else:
            expr = ("path", self.path())
        alias = None
        if self.is_kw("AS"):
            self.advance()
            if self.tok.kind != "ident":
                self.fail("expected an alias")
            alias = self.advance().text
        return SelectItem(expr, alias)

    def path(self) -> tuple[str, ...]:
        if self.tok.kind != "ident" or self.tok.text.upper() in KEYWORDS:
            self.fail("expected a property name")
        names = [self.advance().text]
        while self.is_op(".", "["):
            if self.advance().text == ".":
                if self.tok.kind != "ident":
                    self.fail("expected a property name after '.'")
                names.append(self.advance().text)
            else:
                if self.tok.kind != "string":
                    self.fail("expected a quoted property name in [ ]")
                names.append(self.advance().value)
                self.expect_op("]")
        return tuple(names)

    # expr := and (OR and)* ; and := not (AND not)* ; not := NOT not | comparison
    def expr(self) -> tuple:
        node = self.and_expr()
        while self.is_kw("OR"):
            self.advance()
            node = ("or", node, self.and_expr())
        return node

    def and_expr(self) -> tuple:
        node = self.not_expr()
        while self.is_kw("AND"):
            self.advance()
            node = ("and", node, self.not_expr())
        return node

    def not_expr(self) -> tuple:
        if self.is_kw("NOT"):
            self.advance()
            return ("not", self.not_expr())
        return self.comparison()

    def comparison(self) -> tuple:
        left = self.additive()
        if self.tok.kind == "op" and self.tok.text in COMPARISONS:
            op = self.advance().text
            return ("cmp", "!=" if op == "<>" else op, left, self.additive())
        if self.is_kw("IN", "NIN"):
            negate = self.advance().text.upper() == "NIN"
            return ("in", negate, left, self.array())
        return left

    def additive(self) -> tuple:
        node = self.term()
        while self.is_op("+", "-"):
            node = ("arith", self.advance().text, node, self.term())
        return node

    def term(self) -> tuple:
        node = self.unary()
        while self.is_op("*", "/", "%"):
            node = ("arith", self.advance().text, node, self.unary())
        return node

    def unary(self) -> tuple:
        if self.is_op("-"):
            self.advance()
            return ("arith", "-", ("lit", 0), self.unary())
        return self.primary()

    def primary(self) -> tuple:
        tok = self.tok
        if tok.kind in ("number", "string"):
            self.advance()
            return ("lit", tok.value)
        if self.is_op("("):
            self.advance()
            node = self.expr()
            self.expect_op(")")
            return node
        if self.is_op("["):
            return ("lit", self.array())
        if tok.kind == "ident":
            upper = tok.text.upper()
            constants = {"TRUE": True, "FALSE": False, "NULL": None, "UNDEFINED": UNDEFINED}
            if upper in constants:
                self.advance()
                return ("lit", constants[upper])
            if self.tokens[self.i + 1].text == "(":
                return self.function()
            return ("path", self.path())
        self.fail("expected an expression")

    def function(self) -> tuple:
        name = self.advance()
        if name.text.upper() != "IS_DEFINED":
            raise QueryError(f"unknown function '{name.text}' (twin queries support IS_DEFINED)", name.pos)
        self.expect_op("(")
        path = self.path()
        self.expect_op(")")
        return ("defined", path)

    def array(self) -> list:
        self.expect_op("[")
        values = []
        while not self.is_op("]"):
            start = self.tok
            node = self.unary()
            if not _is_constant(node):
                raise QueryError("array elements must be constants", start.pos)
            values.append(_eval(node, {}))
            if not self.is_op("]"):
                self.expect_op(",")
        self.advance()
        return values


def _is_constant(node: tuple) -> bool:
    return node[0] == "lit" or (node[0] == "arith" and _is_constant(node[2]) and _is_constant(node[3]))


def parse(text: str) -> Query:
    """Parse a query string; QueryError names the position of the first problem."""
    if not isinstance(text, str) or not text.strip():
        raise QueryError("the query is empty")
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError(f"the query is longer than {MAX_QUERY_LENGTH} characters")
    return _Parser(text).query()


def lookup(doc: Any, names: tuple[str, ...]) -> tuple[Any, str]:
    """(value, last name as spelled in the document) of a path; UNDEFINED when absent."""
    current, actual = doc, names[-1]
    for name in names:
        if not isinstance(current, dict):
            return UNDEFINED, actual
        if name in current:
            current, actual = current[name], name
            continue
        lowered = name.lower()
        for key in current:
            if key.lower() == lowered:
                current, actual = current[key], key
                break
        else:
            return UNDEFINED, actual
    return current, actual


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "complex"


def _compare(op: str, left: Any, right: Any) -> Any:
    if left is UNDEFINED or right is UNDEFINED:
        return UNDEFINED
    kind = _kind(left)
    if kind != _kind(right) or kind == "complex":
        return UNDEFINED
    if op == "=":
        return left == right
    if op == "!=":
        return left != right
    if kind not in ("number", "string"):
        return UNDEFINED
    return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]


def _arith(op: str, left: Any, right: Any) -> Any:
    if _kind(left) != "number" or _kind(right) != "number":
        return UNDEFINED
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if right == 0:
        return UNDEFINED
    return left / right if op == "/" else left % right


def _eval(node: tuple, doc: Any) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "path":
        return lookup(doc, node[1])[0]
    if kind == "defined":
        return lookup(doc, node[1])[0] is not UNDEFINED
    if kind == "cmp":
        return _compare(node[1], _eval(node[2], doc), _eval(node[3], doc))
    if kind == "arith":
        return _arith(node[1], _eval(node[2], doc), _eval(node[3], doc))
    if kind == "in":
        value = _eval(node[2], doc)
        if value is UNDEFINED or _kind(value) == "complex":
            return UNDEFINED
        found = any(_kind(v) == _kind(value) and v == value for v in node[3])
        return found != node[1]
    if kind == "not":
        value = _eval(node[1], doc)
        return (not value) if isinstance(value, bool) else UNDEFINED
    left = _eval(node[1], doc)
    right = _eval(node[2], doc)
    left = left if isinstance(left, bool) else UNDEFINED
    right = right if isinstance(right, bool) else UNDEFINED
    if kind == "and":
        if left is False or right is False:
            return False
        return True if left is True and right is True else UNDEFINED
    if left is True or right is True:  # "or"
        return True
    return False if left is False and right is False else UNDEFINED


def matches(query: Query, doc: dict[str, Any]) -> bool:
    return query.where is None or _eval(query.where, doc) is True


def _names(query: Query) -> list[str | None]:
    """Output key of each select item: alias, else the path's last name, else $1, $2... for aggregates."""
    names, unnamed = [], 0
    for item in query.select or ():
        if item.alias:
            names.append(item.alias)
        elif item.expr[0] == "path":
            names.append(None)  # the last name as spelled in the document
        else:
            unnamed += 1
            names.append(f"${unnamed}")
    return names


def project(query: Query, doc: dict[str, Any]) -> dict[str, Any]:
    """The item a non-aggregate query returns for one matching twin."""
    if query.select is None:
        return doc
    out: dict[str, Any] = {}
    for item, name in zip(query.select, _names(query), strict=True):
        value, actual = lookup(doc, item.expr[1])
        if value is not UNDEFINED:
            out[name or actual] = value
    return out


def _aggregate(func: str, path: tuple[str, ...] | None, docs: list[dict[str, Any]]) -> Any:
    if func == "COUNT":
        return len(docs)
    values = [v for v in (lookup(d, path)[0] for d in docs) if _kind(v) == "number"]
    if not values:
        return UNDEFINED
    return {"SUM": sum(values), "AVG": sum(values) / len(values), "MIN": min(values), "MAX": max(values)}[func]


def aggregate(query: Query, docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of an aggregate query (COUNT() etc., optionally GROUP BY) over the matching twins."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        if matches(query, doc):
            key = json.dumps([repr(v) if v is UNDEFINED else v for v in (lookup(doc, p)[0] for p in query.group_by)])
            groups.setdefault(key, []).append(doc)
    if not query.group_by and not groups:
        groups[""] = []
    rows = []
    for members in groups.values():
        row: dict[str, Any] = {}
        for item, name in zip(query.select or (), _names(query), strict=True):
            if item.expr[0] == "agg":
                value, actual = _aggregate(item.expr[1], item.expr[2], members), ""
            else:
                value, actual = lookup(members[0], item.expr[1])
            if value is not UNDEFINED:
                row[name or actual] = value
        rows.append(row)
    return rows[: query.top] if query.top is not None else rows


def run(query: Query, docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """All results of a query over docs (no paging)."""
    if query.is_aggregate:
        return aggregate(query, docs)
    results = [project(query, d) for d in docs if matches(query, d)]
    return results[: query.top] if query.top is not None else results
