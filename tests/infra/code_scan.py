"""What the product code uses, discovered from the code itself (never from a list kept beside it).

- app settings: string literals passed to the Settings accessors (get/required/flag/number/_get/_require/_bool/
  _number/_list/_storage_uri), to os.environ/os.getenv, or to a module-level helper that forwards one of its
  parameters to such an accessor (e.g. twin_setup.settings._int(settings, "TWIN_MAX_DEPTH", ...));
- telemetry events: telemetry.emit("event", duration, field=...) calls and their keyword fields;
- Azure SDK operations: method calls by name (get_secret, update_twin, send_message, ...);
- functions: function_app.app indexed the way the Python worker indexes it (local.host.loader).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCT_DIRS = ("allocation", "twin_setup", "cert_lifecycle", "shared", "health", "capacity", "funnel")
ACCESSORS = {"get", "required", "flag", "number", "_get", "_require", "_bool", "_number", "_list", "_storage_uri"}
SETTING_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")


def product_files() -> list[Path]:
    files = [REPO / "function_app.py"]
    for folder in PRODUCT_DIRS:
        files += sorted(p for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)
    return files


@cache
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _callee(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    if isinstance(node.func, ast.Name):
        return node.func.id
    return None


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level NAME = "STRING" assignments."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


def _literal(node: ast.expr, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _is_environ(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and isinstance(node.value, ast.Name) \
        and node.value.id == "os"


def _forwarders(tree: ast.Module) -> dict[str, int]:
    """Functions of this module that pass one of their parameters to an accessor: name -> parameter index."""
    found = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef):
            continue
        params = [a.arg for a in node.args.args]
        for call in ast.walk(node):
            if isinstance(call, ast.Call) and _callee(call) in ACCESSORS and call.args \
                    and isinstance(call.args[0], ast.Name) and call.args[0].id in params:
                found[node.name] = params.index(call.args[0].id)
    return found


@dataclass
class Usage:
    """Where each discovered name is used (file:line), for readable failure messages."""

    places: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, name: str, path: Path, node: ast.AST) -> None:
        self.places[name].append(f"{path.relative_to(REPO)}:{node.lineno}")

    @property
    def names(self) -> set[str]:
        return set(self.places)


@cache
def app_settings() -> Usage:
    usage = Usage()
    for path in product_files():
        tree = _parse(path)
        constants = _constants(tree)
        forwarders = _forwarders(tree)
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Call):
                callee = _callee(node)
                args = node.args
                if callee in ACCESSORS and args:
                    name = _literal(args[0], constants)
                elif callee == "getenv" and args:
                    name = _literal(args[0], constants)
                elif callee in forwarders and len(args) > forwarders[callee]:
                    name = _literal(args[forwarders[callee]], constants)
                if callee in ("get", "setdefault") and isinstance(node.func, ast.Attribute) \
                        and _is_environ(node.func.value) and args:
                    name = _literal(args[0], constants)
            elif isinstance(node, ast.Subscript) and _is_environ(node.value):
                name = _literal(node.slice, constants)
            if name and SETTING_NAME.match(name):
                usage.add(name, path, node)
    return usage


@dataclass(frozen=True)
class Emit:
    event: str
    fields: frozenset[str]
    open_ended: bool  # **kwargs passed: any field may appear
    place: str


@cache
def telemetry_events() -> dict[str, list[Emit]]:
    """event name -> every emit call of it."""
    events: dict[str, list[Emit]] = defaultdict(list)
    for path in product_files():
        if path.name == "telemetry.py" and path.parent.name == "shared":
            continue
        tree = _parse(path)
        constants = _constants(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and _callee(node) == "emit" and node.args):
                continue
            func = node.func
            on_telemetry = isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                and func.value.id == "telemetry"
            if isinstance(func, ast.Attribute) and not on_telemetry:
                continue
            event = _literal(node.args[0], constants)
            if event is None:
                continue
            fields = {kw.arg for kw in node.keywords if kw.arg and kw.arg != "duration_ms"}
            if len(node.args) > 1 or any(kw.arg == "duration_ms" for kw in node.keywords):
                fields.add("durationMs")
            fields.add("event")
            open_ended = any(kw.arg is None for kw in node.keywords)
            events[event].append(Emit(event, frozenset(fields), open_ended,
                                      f"{path.relative_to(REPO)}:{node.lineno}"))
    return dict(events)


@cache
def method_calls() -> Usage:
    """Every attribute call in the product code by method name (SDK operations among them)."""
    usage = Usage()
    for path in product_files():
        for node in ast.walk(_parse(path)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                usage.add(node.func.attr, path, node)
    return usage


@cache
def string_literals() -> Usage:
    usage = Usage()
    for path in product_files():
        for node in ast.walk(_parse(path)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                usage.add(node.value, path, node)
    return usage


@cache
def functions() -> dict[str, object]:
    """name -> local.host.loader.FunctionSpec of every function the app registers."""
    from local.host.loader import import_app, index_functions

    return {spec.name: spec for spec in index_functions(import_app("function_app:app", REPO))}


def imported_blueprint_packages() -> set[str]:
    """Top-level packages function_app.py imports (its blueprints)."""
    names = set()
    for node in _parse(REPO / "function_app.py").body:
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names - {"azure"}
