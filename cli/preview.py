"""`onboarding preview CN`: the twin configuration twin setup would write, and where each value comes from
(twin_setup/preview.py). No hub is touched."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from cli.output import Outcome
from shared.errors import OnboardingError


def register(commands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "preview", parents=[common], help="the twin configuration a sensor would get, and where each value comes from",
        description="Build the configuration as on_device_created does (template from Blob, the facility's overrides "
                    "from SQL, the same merge, validation and size rules) without touching any hub.")
    parser.add_argument("device_id", metavar="CN", help="device ID / CN, e.g. sensor-temp-FAC03-SN482019")
    parser.add_argument("--template-file", type=Path, metavar="FILE",
                        help="use this local template instead of the one in Blob (preview before uploading)")
    parser.set_defaults(run=run)


def render_refusal(data: dict[str, Any], out: TextIO) -> None:
    refused = data["refused"]
    print(f"{data['deviceId']}: would fail with {refused['code']} ({refused['status']}): "
          f"{refused['detail'] or refused['message']}", file=out)


def run(args: argparse.Namespace) -> Outcome:
    from twin_setup.preview import preview, render

    try:
        result = preview(args.device_id, args.template_file)
    except OnboardingError as err:
        if err.status >= 500:  # a fault (Storage or SQL down, a bad setting), not what the device would get
            raise
        refused = {"code": err.code, "status": err.status, "message": err.error.message, "detail": err.detail}
        return Outcome({"deviceId": args.device_id, "refused": refused}, render_refusal, err)
    return Outcome(result, render)
