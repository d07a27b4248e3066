"""A small evaluator of Bicep expressions over tree-sitter-bicep's syntax tree: the stand-in for `bicep build` plus a
deployment, where no Bicep compiler can be installed. It expands a module's resource loops for given parameter values
and gives each instance's name and properties, so a test can read what a template declares for, say,
hubsPerRegion=2.

What it covers is what the hub templates use: literals, string interpolation, arrays, objects, loops (`[for x in ...]`,
`[for (x, i) in ...]`), conditions, member and index access, the arithmetic, comparison and logical operators, the
ternary, lambdas and the functions listed in FUNCTIONS (any other call is a Runtime value). A reference to a resource
instance is its name, id, location and a Runtime value for each other property (an IoT hub's properties.hostName is
{name}.azure-devices.net, as Azure makes it). guid() is a deterministic hash of its arguments, as in ARM: equal
arguments, equal names. Module params are evaluated when the module reads them, so only what a test asks for is.

tree-sitter-bicep parses `c ? a : b.x` as `(c ? a : b).x`; the templates put such a branch in parentheses.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field

from tests.infra.bicep import INFRA, ts_tree

RUNTIME = {"microsoft.devices/iothubs": lambda name: {"properties": {"hostName": f"{name}.azure-devices.net"}}}


class Unsupported(Exception):
    pass


class Runtime(dict):
    """A value known only at deployment (a resource's runtime property): every key below it is another one, and it
    prints as its path."""

    def __init__(self, path: str, known: dict | None = None):
        super().__init__(known or {})
        self.path = path

    def __missing__(self, key):
        return Runtime(f"{self.path}.{key}")

    def __str__(self):
        return f"<{self.path}>"


class LazyParams(dict):
    """The params a parent passes to a module, each evaluated when the module reads it."""

    def __init__(self, thunks: dict):
        super().__init__(thunks)
        self._values: dict = {}

    def __getitem__(self, key):
        if key not in self._values:
            self._values[key] = super().__getitem__(key)()
        return self._values[key]


@dataclass
class Lambda:
    names: list[str]
    body: object
    scope: dict


@dataclass
class Instance:
    """One deployed resource (or one iteration of a resource loop)."""

    symbol: str
    type: str
    name: str
    index: int | None
    body: object = field(repr=False)
    scope: dict = field(repr=False)
    template: Template = field(repr=False)

    @property
    def reference(self) -> dict:
        value = Runtime(f"{self.type}/{self.name}", {
            "name": self.name, "id": f"/{self.type}/{self.name}", "type": self.type,
            "identity": {"principalId": f"principal:{self.type}/{self.name}"}})
        value.update(RUNTIME.get(self.type.lower(), lambda _n: {})(self.name))
        value["properties"] = Runtime(f"{self.type}/{self.name}.properties", value.get("properties"))
        try:
            value["location"] = self.get("location")
        except KeyError:
            pass
        return value

    def get(self, *path: str):
        """A property of the declaration, evaluated (e.g. get("properties", "iotHubs"))."""
        node = self.body
        for key in path:
            node = self.template.property_node(node, key)
        return self.template.eval(node, self.scope)


def text(node) -> str:
    return node.text.decode()


def named(node) -> list:
    return [c for c in node.children if c.is_named and c.type != "comment"]


class Template:
    def __init__(self, relative: str, params: dict | None = None):
        self.path = INFRA / relative
        self.root = ts_tree(self.path).root_node
        self.decls: dict[str, dict[str, object]] = {"parameter": {}, "variable": {}, "resource": {}, "module": {},
                                                     "output": {}}
        for node in self.root.children:
            kind = node.type.removesuffix("_declaration")
            if kind in self.decls:
                ident = next(c for c in node.children if c.type == "identifier")
                self.decls[kind][text(ident)] = node
        self.params = params if isinstance(params, LazyParams) else dict(params or {})
        self._cache: dict[str, object] = {}
        self._instances: dict[str, list[Instance]] = {}

    # --- declarations ---------------------------------------------------------------------------------------------

    def value_node(self, decl):
        """The expression after `=` of a declaration."""
        children = decl.children
        return children[[c.type for c in children].index("=") + 1]

    def symbol(self, name: str, scope: dict):
        if name in scope:
            return scope[name]
        if name in self._cache:
            return self._cache[name]
        if name in self.decls["parameter"]:
            if name in self.params:
                value = self.params[name]
            else:
                decl = self.decls["parameter"][name]
                if "=" not in [c.type for c in decl.children]:
                    raise Unsupported(f"{self.path.name}: parameter {name} has no value")
                value = self.eval(self.value_node(decl), {})
        elif name in self.decls["variable"]:
            value = self.eval(self.value_node(self.decls["variable"][name]), {})
        elif name in self.decls["resource"]:
            found = self.instances(name)
            value = [i.reference for i in found] if self.is_loop(name) else (found[0].reference if found else None)
        elif name in self.decls["module"]:
            value = self.module(name)
        else:
            raise Unsupported(f"{self.path.name}: unknown symbol {name}")
        self._cache[name] = value
        return value

    def is_loop(self, symbol: str) -> bool:
        node = self.decls["resource"].get(symbol) or self.decls["module"].get(symbol)
        return self.value_node(node).type == "for_statement"

    def expand(self, node, scope: dict) -> list[tuple[object, dict, int | None]]:
        """The bodies of a declaration's value: (object node, scope, loop index), none when its condition is false."""
        if node.type == "for_statement":
            parts = named(node)
            if parts[0].type == "for_loop_parameters":
                loop = [text(c) for c in named(parts[0])]
            else:
                loop = [text(parts[0])]
            items = self.eval(parts[1], scope)
            out = []
            for index, item in enumerate(items):
                inner = {**scope, loop[0]: item, **({loop[1]: index} if len(loop) > 1 else {})}
                out += [(body, s, index) for body, s, _ in self.expand(parts[2], inner)]
            return out
        if node.type == "if_statement":
            condition, body = named(node)[-2:]
            return self.expand(body, scope) if self.eval(condition, scope) else []
        return [(node, scope, None)]

    def instances(self, symbol: str) -> list[Instance]:
        if symbol not in self._instances:
            decl = self.decls["resource"][symbol]
            resource_type = json.loads(json.dumps(text(next(c for c in decl.children if c.type == "string"))))
            resource_type = resource_type.strip("'").split("@")[0]
            found = []
            for body, scope, index in self.expand(self.value_node(decl), {}):
                name = self.eval(self.property_node(body, "name"), scope)
                found.append(Instance(symbol, resource_type, name, index, body, scope, self))
            self._instances[symbol] = found
        return self._instances[symbol]

    def module(self, symbol: str):
        """A module's outputs (one object; a list of them for a module loop), its template evaluated with the params
        this one passes."""
        decl = self.decls["module"][symbol]
        path = text(next(c for c in decl.children if c.type == "string")).strip("'")
        results = []
        for body, scope, _index in self.expand(self.value_node(decl), {}):
            params_node = self.property_node(body, "params")
            params = LazyParams({key: (lambda value=value, scope=scope: self.eval(value, scope))
                                 for key, value in self.object_items(params_node)})
            child = Template(str((self.path.parent / path).resolve().relative_to(INFRA)), params)
            results.append({"outputs": child.outputs(), "name": self.eval(self.property_node(body, "name"), scope),
                            "template": child})
        return results if self.is_loop(symbol) else (results[0] if results else None)

    def child(self, symbol: str) -> Template:
        return self.symbol(symbol, {})["template"]

    def outputs(self) -> dict:
        return _LazyOutputs(self)

    def output(self, name: str):
        return self.eval(self.value_node(self.decls["output"][name]), {})

    # --- expressions ----------------------------------------------------------------------------------------------

    def object_items(self, node):
        for prop in named(node):
            if prop.type != "object_property":
                continue
            key_node, value = named(prop)[0], named(prop)[-1]
            key = text(key_node).strip("'")
            yield key, value

    def property_node(self, node, key: str):
        for name, value in self.object_items(node):
            if name == key:
                return value
        raise KeyError(key)

    def eval(self, node, scope: dict):  # one branch per node type
        kind = node.type
        if kind == "parenthesized_expression":
            return self.eval(named(node)[0], scope)
        if kind == "identifier":
            return self.symbol(text(node), scope)
        if kind == "number":
            return int(text(node))
        if kind == "boolean":
            return text(node) == "true"
        if kind == "null":
            return None
        if kind == "string":
            out = ""
            for part in node.children:
                if part.type == "string_content":
                    out += text(part)
                elif part.type == "escape_sequence":
                    out += {"\\'": "'", "\\\\": "\\", "\\n": "\n", "\\$": "$"}.get(text(part), text(part))
                elif part.type == "interpolation":
                    out += stringify(self.eval(named(part)[0], scope))
            return out
        if kind == "array":
            return [self.eval(item, scope) for item in named(node)]
        if kind == "object":
            return {key: self.eval(value, scope) for key, value in self.object_items(node)}
        if kind == "for_statement":
            return [self.eval(body, s) for body, s, _ in self.expand(node, scope)]
        if kind == "member_expression":
            target, prop = named(node)[0], named(node)[-1]
            value = self.eval(target, scope)
            if isinstance(value, _LazyOutputs):
                return value[text(prop)]
            return value[text(prop)]
        if kind == "subscript_expression":
            target, index = named(node)
            return self.eval(target, scope)[self.eval(index, scope)]
        if kind == "unary_expression":
            operator, operand = node.children[0], named(node)[-1]
            value = self.eval(operand, scope)
            return (not value) if text(operator) == "!" else -value
        if kind == "binary_expression":
            left, right = named(node)[0], named(node)[-1]
            operator = text(node.children[1])
            if operator == "&&":
                return self.eval(left, scope) and self.eval(right, scope)
            if operator == "||":
                return self.eval(left, scope) or self.eval(right, scope)
            a, b = self.eval(left, scope), self.eval(right, scope)
            return BINARY[operator](a, b)
        if kind == "ternary_expression":
            condition, true_value, false_value = named(node)
            return self.eval(true_value if self.eval(condition, scope) else false_value, scope)
        if kind == "lambda_expression":
            parts = named(node)
            names = [text(c) for c in parts[:-1] if c.type in ("identifier", "variable")] or [text(parts[0])]
            return Lambda(names, parts[-1], scope)
        if kind == "call_expression":
            function, arguments = named(node)
            name = text(function)
            if name not in FUNCTIONS:  # environment(), cidrSubnet(), ...: known at deployment only
                return Runtime(f"{name}({text(arguments)[1:-1][:40]})")
            args = [self.eval(arg, scope) for arg in named(arguments)]
            return FUNCTIONS[name](self, *args)
        raise Unsupported(f"{self.path.name}: {kind} is not modelled: {text(node)[:60]!r}")

    def call(self, function: Lambda, *args):
        return self.eval(function.body, {**function.scope, **dict(zip(function.names, args, strict=True))})


class _LazyOutputs(dict):
    """A module's outputs, each evaluated when read."""

    def __init__(self, template: Template):
        super().__init__()
        self.template = template

    def __getitem__(self, name):
        return self.template.output(name)


def stringify(value) -> str:
    if isinstance(value, Runtime):
        return str(value)
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _guid(*args) -> str:
    return str(uuid.UUID(hashlib.md5("|".join(map(stringify, args)).encode(), usedforsecurity=False).hexdigest()))


BINARY = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: int(a / b), "%": lambda a, b: a % b,
    "<": lambda a, b: a < b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "??": lambda a, b: b if a is None else a,
}

FUNCTIONS = {
    "length": lambda _t, value: len(value),
    "range": lambda _t, start, count: list(range(start, start + count)),
    "empty": lambda _t, value: not value,
    "union": lambda _t, *objects: {k: v for o in objects for k, v in o.items()},
    "concat": lambda _t, *parts: [x for p in parts for x in p] if isinstance(parts[0], list) else "".join(parts),
    "join": lambda _t, items, separator: separator.join(map(stringify, items)),
    "map": lambda t, items, function: [t.call(function, item) for item in items],
    "filter": lambda t, items, function: [item for item in items if t.call(function, item)],
    "string": lambda _t, value: stringify(value),
    "toLower": lambda _t, value: value.lower(),
    "take": lambda _t, value, count: value[:count],
    "contains": lambda _t, container, item: item in container,
    "guid": lambda _t, *args: _guid(*args),
    "uniqueString": lambda _t, *args: hashlib.sha256("|".join(args).encode()).hexdigest()[:13],
    "subscription": lambda _t: {"id": "/subscriptions/00000000-0000-0000-0000-000000000001",
                                "subscriptionId": "00000000-0000-0000-0000-000000000001"},
    "tenant": lambda _t: {"tenantId": "tenant"},
    "resourceGroup": lambda _t: {"id": "/resourceGroups/rg", "name": "rg", "location": "westeurope"},
    "subscriptionResourceId": lambda _t, *parts: "/".join(parts),
    "resourceId": lambda _t, *parts: "/".join(parts),
    "loadJsonContent": lambda t, path: json.loads((t.path.parent / path).read_text()),
    "loadTextContent": lambda t, path: (t.path.parent / path).read_text(),
    "listKeys": lambda _t, resource_id, _version: {"primaryKey": f"key:{resource_id}"},
}


