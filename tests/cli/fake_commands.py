"""A command group for testing cli.main's error handling without any Azure service."""

from __future__ import annotations

import argparse
import logging
import warnings

from cli.output import Outcome
from shared.config import SettingError
from shared.errors import OnboardingError


class ServiceRequestError(Exception):
    """Stands in for azure.core.exceptions.ServiceRequestError (matched by module and name)."""


ServiceRequestError.__module__ = "azure.core.exceptions"


def _fail(kind: str) -> None:
    logging.getLogger("azure.core.pipeline.policies._retry").warning("noisy SDK retry warning")
    warnings.warn("noisy Python warning", stacklevel=1)
    if kind == "refusal":
        raise OnboardingError("unknown_facility", "facility FAC77")
    if kind == "setting":
        raise SettingError("app setting KEY_VAULT_URL is not set")
    if kind == "dependency":
        try:
            raise ServiceRequestError("<urllib3.connection.HTTPSConnection object at 0x7f00>: Connection refused")
        except ServiceRequestError as exc:
            raise RuntimeError("template temperature-sensor.json: ServiceRequestError") from exc
    raise ValueError("something\nunexpected happened")


def register(commands, common: argparse.ArgumentParser) -> None:
    fail = commands.add_parser("fail", parents=[common])
    fail.add_argument("kind", choices=["refusal", "setting", "dependency", "bug"])
    fail.set_defaults(run=lambda args: _fail(args.kind))

    answer = commands.add_parser("answer", parents=[common])
    answer.add_argument("--refused", action="store_true")
    answer.set_defaults(run=lambda args: Outcome(
        {"answer": 42}, lambda data, out: print(f"answer {data['answer']}", file=out),
        OnboardingError("certificate_revoked", "serial 1F revoked") if args.refused else None))
