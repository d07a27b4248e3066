"""Find the functions of a v2-programming-model app, the way the Python worker indexes them.

The worker imports `function_app.py`, takes its FunctionApp and calls `get_functions()`; each Function's
trigger and bindings serialise to the same metadata a function.json would hold. The host reads that
metadata, so this module does too (trigger `get_dict_repr()`), rather than private attributes.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import azure.functions as func

log = logging.getLogger("local.host")

HTTP_TRIGGER = "httpTrigger"
TIMER_TRIGGER = "timerTrigger"
QUEUE_TRIGGER = "queueTrigger"
EVENT_GRID_TRIGGER = "eventGridTrigger"
SUPPORTED_TRIGGERS = (HTTP_TRIGGER, TIMER_TRIGGER, QUEUE_TRIGGER, EVENT_GRID_TRIGGER)

# get_functions() registers names as it builds and refuses a second call on the same app
# ("does not have a unique function name"), so each app is indexed once per process.
_indexed: weakref.WeakKeyDictionary[Any, list[func.Function]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class FunctionSpec:
    """What the host needs to know about one function: its trigger metadata and the Python callable."""

    name: str
    trigger_type: str
    trigger_arg: str
    trigger: dict[str, Any]
    user_function: Callable[..., Any]
    other_bindings: tuple[dict[str, Any], ...] = ()
    parameters: tuple[str, ...] = ()
    is_async: bool = False
    wants_context: bool = False
    function_directory: str = field(default="")

    @property
    def is_http(self) -> bool:
        return self.trigger_type == HTTP_TRIGGER

    @property
    def route(self) -> str:
        return str(self.trigger.get("route") or self.name)

    @property
    def methods(self) -> tuple[str, ...] | None:
        """Allowed HTTP methods, upper case; None means any method (the trigger listed none)."""
        methods = self.trigger.get("methods")
        return tuple(str(m).upper() for m in methods) if methods else None

    @property
    def auth_level(self) -> str:
        return str(self.trigger.get("authLevel") or "function").lower()


def import_app(spec: str = "function_app:app", script_root: Path | str = ".") -> Any:
    """Import `module:attribute` with the script root on sys.path, as the worker does."""
    module_name, _, attribute = spec.partition(":")
    root = str(Path(script_root).resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute or "app")
    except AttributeError:
        raise ValueError(f"{module_name} has no attribute '{attribute or 'app'}' (expected a FunctionApp)") from None


def index_functions(app: Any) -> list[FunctionSpec]:
    """Describe every function of app; ValueError for what the worker would also refuse to index."""
    if not hasattr(app, "get_functions"):
        raise ValueError(f"{app!r} is not a FunctionApp (it has no get_functions())")
    if app not in _indexed:
        _indexed[app] = app.get_functions()
    return [_describe(function) for function in _indexed[app]]


def _describe(function: func.Function) -> FunctionSpec:
    name = function.get_function_name()
    trigger = function.get_trigger()
    if trigger is None:
        raise ValueError(f"Function {name} has no trigger")
    trigger_dict = _plain(trigger.get_dict_repr())
    trigger_type = str(trigger_dict.get("type"))
    others = tuple(_plain(b.get_dict_repr()) for b in function.get_bindings() if b is not trigger)
    user_function = function.get_user_function()
    parameters = tuple(inspect.signature(user_function).parameters)
    bound = {trigger_dict["name"], "context"} | {b["name"] for b in others}
    unbound = [p for p in parameters if p not in bound]
    if unbound:
        raise ValueError(f"Function {name}: parameters {unbound} are declared in Python but bound to nothing "
                         "(the worker refuses to index such a function)")
    if trigger_type not in SUPPORTED_TRIGGERS:
        log.warning("Function %s: trigger %s is not run by this dev host (only %s)", name, trigger_type,
                    ", ".join(SUPPORTED_TRIGGERS))
    for binding in others:
        if binding["name"] != "$return" and binding.get("direction") == "IN":
            log.warning("Function %s: input binding %s (%s) is not supported by this dev host; it gets None",
                        name, binding["name"], binding.get("type"))
    source = inspect.getsourcefile(user_function) or ""
    return FunctionSpec(
        name=name,
        trigger_type=trigger_type,
        trigger_arg=str(trigger_dict["name"]),
        trigger=trigger_dict,
        user_function=user_function,
        other_bindings=others,
        parameters=parameters,
        is_async=inspect.iscoroutinefunction(user_function),
        wants_context="context" in parameters,
        function_directory=str(Path(source).parent) if source else "",
    )


def _plain(value: Any) -> Any:
    """Metadata with enums turned into their JSON values (the form function.json carries)."""
    if isinstance(value, Enum):
        return value.name if type(value).__name__ == "BindingDirection" else value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
