"""Run one function invocation the way the Python worker does, and log it once.

Sync functions run in a thread pool (PYTHON_THREADPOOL_THREAD_COUNT, as the worker sizes it) so the host
keeps serving while they work; async functions run on the host's event loop. A `context` parameter gets a
func.Context. host.json functionTimeout fails an invocation that runs too long (a sync function's thread
cannot be stopped, so it finishes in the background, as an abandoned invocation would).
Each invocation ends in one log record on logger "local.host": function, trigger, outcome, duration, id.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import azure.functions as func
from azure.functions import _abc as func_abc

from local.host.loader import FunctionSpec
from shared import usage

log = logging.getLogger("local.host")


@dataclass(frozen=True)
class InvocationResult:
    invocation_id: str
    succeeded: bool
    value: Any = None
    error: BaseException | None = None
    duration_ms: float = 0.0


class _TraceContext(func_abc.TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(func_abc.RetryContext):
    retry_count = 0
    max_retry_count = 0
    exception = None  # type: ignore[assignment]


class InvocationContext(func.Context):
    """The func.Context a function with a `context` parameter receives."""

    def __init__(self, invocation_id: str, function_name: str, function_directory: str):
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._thread_local = threading.local()
        self._thread_local.invocation_id = invocation_id
        self._trace = _TraceContext()
        self._retry = _RetryContext()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> threading.local:  # type: ignore[override]
        return self._thread_local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> func_abc.TraceContext:
        return self._trace

    @property
    def retry_context(self) -> func_abc.RetryContext:
        return self._retry


class _Out(func.Out):
    """An output binding the dev host accepts but does not deliver (it says so in the log)."""

    def __init__(self, function: str, binding: dict[str, Any]):
        self._function, self._binding, self._value = function, binding, None

    def set(self, val: Any) -> None:
        self._value = val
        log.warning("Function %s: output binding %s (%s) is not delivered by this dev host", self._function,
                    self._binding.get("name"), self._binding.get("type"))

    def get(self) -> Any:
        return self._value


class Invoker:
    def __init__(self, function_timeout: timedelta | None = None, max_workers: int | None = None):
        workers = max_workers or int(os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT") or 0) or None
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="func-worker")
        self._timeout = function_timeout.total_seconds() if function_timeout else None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def invoke(self, spec: FunctionSpec, trigger_value: Any, *,
                     convert: Callable[[Any], Any] | None = None) -> InvocationResult:
        """Call the function with its trigger value; `convert` turns the return value into the output
        (for HTTP), inside the invocation, so a bad return value fails the invocation as in the worker."""
        invocation_id = str(uuid.uuid4())
        kwargs = self._arguments(spec, trigger_value, invocation_id)
        started = time.perf_counter()
        try:
            value = await asyncio.wait_for(self._call(spec, kwargs), self._timeout)
            if convert is not None:
                value = convert(value)
        except Exception as exc:  # noqa: BLE001 - a failing function is an outcome to report, not a host crash
            if self._timed_out(exc, started):
                timeout = TimeoutError(f"Timeout value of {timedelta(seconds=self._timeout or 0)} was exceeded "
                                       f"by function: Functions.{spec.name}")
                return self._finish(spec, invocation_id, started, error=timeout)
            return self._finish(spec, invocation_id, started, error=exc)
        return self._finish(spec, invocation_id, started, value=value)

    def _timed_out(self, exc: Exception, started: float) -> bool:
        return (isinstance(exc, TimeoutError) and self._timeout is not None
                and time.perf_counter() - started >= self._timeout)

    async def _call(self, spec: FunctionSpec, kwargs: dict[str, Any]) -> Any:
        if spec.is_async:
            return await spec.user_function(**kwargs)
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, spec.user_function, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    def _arguments(self, spec: FunctionSpec, trigger_value: Any, invocation_id: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for binding in spec.other_bindings:
            name = binding["name"]
            if name in spec.parameters:
                kwargs[name] = _Out(spec.name, binding) if binding.get("direction") == "OUT" else None
        if spec.trigger_arg in spec.parameters:
            kwargs[spec.trigger_arg] = trigger_value
        if spec.wants_context:
            kwargs["context"] = InvocationContext(invocation_id, spec.name, spec.function_directory)
        return kwargs

    def _finish(self, spec: FunctionSpec, invocation_id: str, started: float, *, value: Any = None,
                error: BaseException | None = None) -> InvocationResult:
        duration_ms = (time.perf_counter() - started) * 1000
        usage.count(f"function.{spec.name}")  # what the Functions runtime bills: one per invocation
        outcome = "Failed" if error else "Succeeded"
        extra = {"function": spec.name, "trigger": spec.trigger_type, "outcome": outcome,
                 "duration_ms": round(duration_ms, 1), "invocation_id": invocation_id}
        message = "Executed 'Functions.%s' (%s, Trigger=%s, Id=%s, Duration=%dms)"
        args = (spec.name, outcome, spec.trigger_type, invocation_id, duration_ms)
        if error is None:
            log.info(message, *args, extra=extra)
        else:
            log.error(message + ": %s: %s", *args, type(error).__name__, error, extra=extra,
                      exc_info=(type(error), error, error.__traceback__))
        return InvocationResult(invocation_id, error is None, value, error, duration_ms)
