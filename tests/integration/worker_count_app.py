"""A test-only FunctionApp for the dev host's worker processes: which process answers, and where the timer runs."""

from __future__ import annotations

import os

import azure.functions as func

app = func.FunctionApp()


@app.route(route="pid", auth_level=func.AuthLevel.ANONYMOUS)
def pid(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(str(os.getpid()))


@app.timer_trigger(arg_name="timer", schedule="* * * * * *", run_on_startup=True)
def every_second(timer: func.TimerRequest) -> None:
    with open(os.environ["TICKS_FILE"], "a") as out:
        out.write(f"{os.getpid()}\n")
