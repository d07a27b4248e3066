"""Bicep files read through the two offline parsers (no Bicep compiler can be installed here).

- pycep-parser (Lark grammar) turns a file into a JSON-like tree: parameters, variables, resources, modules,
  outputs. The structural checks read this tree.
- tree-sitter-bicep gives a concrete syntax tree; every file must parse without ERROR/MISSING nodes, and the
  declarations it sees must match pycep's (two independent grammars agreeing is the best available stand-in
  for `bicep build`).

pycep represents both string literals and identifiers as plain Python strings, so the helpers here resolve a
string against the file's variables and parameters only where the Bicep source makes it an identifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@cache
def _pycep_parser():
    from pycep import BicepParser

    return BicepParser()


@cache
def _ts_parser():
    import tree_sitter as ts
    import tree_sitter_bicep as tsb

    return ts.Parser(ts.Language(tsb.language()))


@cache
def pycep_tree(path: Path) -> dict:
    return _pycep_parser().parse(file_path=path)


@cache
def ts_tree(path: Path):
    return _ts_parser().parse(path.read_bytes())


def ts_errors(path: Path) -> list[str]:
    problems = []
    stack = [ts_tree(path).root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            row, col = node.start_point
            problems.append(f"{path.relative_to(REPO)}:{row + 1}:{col + 1}: {node.text[:60]!r}")
        stack.extend(node.children)
    return problems


def ts_declarations(path: Path) -> dict[str, set[str]]:
    """Names of the top-level declarations by kind, as tree-sitter sees them."""
    kinds = {
        "parameter_declaration": "parameters",
        "variable_declaration": "variables",
        "resource_declaration": "resources",
        "module_declaration": "modules",
        "output_declaration": "outputs",
    }
    found: dict[str, set[str]] = {kind: set() for kind in kinds.values()}
    for node in ts_tree(path).root_node.children:
        kind = kinds.get(node.type)
        if kind:
            ident = next(c for c in node.children if c.type == "identifier")
            found[kind].add(ident.text.decode())
    return found


def ts_module_paths(path: Path) -> dict[str, str]:
    """module symbol -> path string, from the tree-sitter tree."""
    paths = {}
    for node in ts_tree(path).root_node.children:
        if node.type == "module_declaration":
            ident = next(c for c in node.children if c.type == "identifier")
            string = next(c for c in node.children if c.type == "string")
            paths[ident.text.decode()] = string.text.decode().strip("'")
    return paths


def unquote_key(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


@dataclass
class BicepFile:
    path: Path
    tree: dict = field(repr=False)

    @property
    def parameters(self) -> dict[str, dict]:
        return self.tree.get("parameters", {})

    @property
    def variables(self) -> dict[str, dict]:
        return self.tree.get("variables", {})

    @property
    def resources(self) -> dict[str, dict]:
        return self.tree.get("resources", {})

    @property
    def modules(self) -> dict[str, dict]:
        return self.tree.get("modules", {})

    @property
    def outputs(self) -> dict[str, dict]:
        return self.tree.get("outputs", {})

    def resources_of_type(self, resource_type: str) -> dict[str, dict]:
        return {k: v for k, v in self.resources.items() if v["type"].lower() == resource_type.lower()}

    def required_parameters(self) -> set[str]:
        """Parameters without a default value (and not nullable)."""
        return {name for name, p in self.parameters.items() if p.get("default") is None and not p.get("nullable")}

    def resolve(self, value: Any, depth: int = 0) -> Any:
        """A variable reference replaced by the variable's value (one file, no expressions evaluated)."""
        if depth > 10:
            return value
        if isinstance(value, str) and value in self.variables:
            return self.resolve(self.variables[value]["value"], depth + 1)
        return value

    def object_keys(self, value: Any) -> set[str]:
        """Keys of an object literal, following variable references and union(...) of objects."""
        value = self.resolve(value)
        if isinstance(value, dict) and "function" in value and value["function"]["type"] == "union":
            keys: set[str] = set()
            for arg in value["function"]["parameters"].values():
                if arg is not None:
                    keys |= self.object_keys(arg)
            return keys
        if isinstance(value, dict) and not ({"function", "operator"} & set(value)):
            return {unquote_key(k) for k in value}
        return set()

    def string_list(self, value: Any) -> list[str]:
        """Items of an array literal of strings (following variable references)."""
        value = self.resolve(value)
        return [self.resolve(v) for v in value] if isinstance(value, list) else []


@cache
def load(relative: str) -> BicepFile:
    path = INFRA / relative
    return BicepFile(path, pycep_tree(path))


def walk(value: Any):
    """Every dict, list and scalar inside a pycep tree, depth first."""
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def function_calls(value: Any, name: str) -> list[dict]:
    """Every call of function `name` (pycep's snake_case type, e.g. load_text_content) inside value."""
    return [v["function"]["parameters"] for v in walk(value)
            if isinstance(v, dict) and isinstance(v.get("function"), dict) and v["function"].get("type") == name]
