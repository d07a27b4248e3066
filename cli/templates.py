"""`onboarding templates ...`: template changes and the rollouts that carry them to installed sensors.

- `diff FILE`: what uploading FILE would change, touching nothing: sensors per facility and type that would
  change, the fields, the sensors whose document would no longer fit the twin (Blob offload), validation errors;
- `rollouts [ID]`: recent rollouts, or one with its waves (counts per state) and failed sensors;
- `resume ID`: continue a halted rollout past the wave it halted on; `rollback ID`: put the previous template
  version back (the kept copy under versions/) and roll it out;
- `drift [--apply] [--template T] [--facility F]`: installed sensors whose twin differs from template (+) overrides
  today (missed changes, edits by hand on the hub, configurations not acknowledged); read-only unless --apply,
  which re-applies them through twin setup's writer. Exits 2 (configuration_drift) when drift remains.
Twin writes go through twin setup's writer (twin_setup/changes.py); README "Configuration changes".
"""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path
from typing import Any, TextIO

from cli.output import Outcome
from shared.errors import OnboardingError
from shared.identity import SENSOR_TYPES


def register(commands, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("templates", parents=[common], help="template changes: diff, rollouts, resume, "
                                "rollback, drift", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = group.add_subparsers(dest="templates_command", required=True, metavar="SUBCOMMAND")
    diff = sub.add_parser("diff", parents=[common], help="what uploading FILE would change (no side effects)")
    diff.add_argument("file", type=Path, metavar="FILE", help="the template, e.g. temperature-sensor.json")
    diff.add_argument("--template", metavar="NAME",
                      help="template name (default: from FILE's name {name}-sensor.json, else its sensorType)")
    diff.set_defaults(run=run_diff)
    rollouts = sub.add_parser("rollouts", parents=[common], help="recent rollouts, or one with its waves")
    rollouts.add_argument("rollout_id", nargs="?", metavar="ID")
    rollouts.set_defaults(run=run_rollouts)
    resume = sub.add_parser("resume", parents=[common], help="continue a halted rollout past its canary")
    resume.add_argument("rollout_id", metavar="ID")
    resume.set_defaults(run=run_resume)
    rollback = sub.add_parser("rollback", parents=[common],
                              help="restore the previous template version and roll it out")
    rollback.add_argument("rollout_id", metavar="ID")
    rollback.set_defaults(run=run_rollback)
    drift = sub.add_parser("drift", parents=[common], help="sensors whose twin differs from template (+) overrides "
                           "today; --apply re-applies them")
    drift.add_argument("--apply", action="store_true", help="re-apply drifted sensors (default: report only)")
    drift.add_argument("--template", metavar="NAME", help="only this template's sensors")
    drift.add_argument("--facility", metavar="CODE", help="only this facility's sensors")
    drift.set_defaults(run=run_drift)


def changes():
    from shared.bootstrap import services
    from twin_setup.wiring import build_changes

    return build_changes(services())


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def template_name(path: Path, raw: bytes, given: str | None) -> str:
    if given:
        name = given
    elif path.name.endswith("-sensor.json"):
        name = path.name.removesuffix("-sensor.json")
    else:
        try:
            name = str(json.loads(raw).get("sensorType") or "")
        except (ValueError, AttributeError):
            name = ""
    if name not in SENSOR_TYPES.values():
        known = ", ".join(sorted(set(SENSOR_TYPES.values())))
        raise OnboardingError("unknown_template", f"{name or path.name!r} is not a template name ({known}); "
                                                  "use --template")
    return name


def render_diff(data: dict[str, Any], out: TextIO) -> None:
    what = (f"template {data['template']} {data.get('currentVersion', '?')} -> {data.get('templateVersion', '?')}"
            if data["kind"] == "template" else f"overrides {data['facility']}/{data['sensorType']}")
    if "validationError" in data and "groups" not in data:
        error = data["validationError"]
        print(f"{what}: does not validate ({error['code']}): {error['detail']}", file=out)
        return
    print(f"{what}: {data['changing']} sensors would change, {data['offloaded']} would move to Blob, "
          f"{data['errors']} would fail validation", file=out)
    for group in data["groups"]:
        print(f"  {group['facility']:<8} {group['template']:<12} {group['changing']:>5} of {group['sensors']:<5} "
              f"change", file=out)
        if group["fields"]:
            print(f"    fields: {', '.join(group['fields'])}"
                  + (f" (+{group['fieldCount'] - len(group['fields'])} more)"
                     if group["fieldCount"] > len(group["fields"]) else ""), file=out)
        if group["offloaded"]:
            print(f"    no longer fits the twin (full document to Blob): {', '.join(group['offloaded'])}", file=out)
        for device_id, error in group["errors"].items():
            print(f"    {device_id}: {error}", file=out)
    if "validationError" in data:
        error = data["validationError"]
        print(f"validation: {error['code']}: {error['detail']}", file=out)


def diff_outcome(preview) -> Outcome:
    data = preview.as_dict()
    failure = preview.problem
    if failure is None and data.get("errors"):
        first = next(e for g in data["groups"] for e in g["errors"].values())
        code, _, detail = first.partition(": ")
        failure = OnboardingError(code, f"{data['errors']} sensors would fail: {detail}"[:300])
    return Outcome(data, render_diff, failure)


def run_diff(args: argparse.Namespace) -> Outcome:
    try:
        raw = args.file.read_bytes()
    except OSError as exc:
        raise OnboardingError("invalid_request", f"{args.file}: {exc.strerror or exc}") from None
    name = template_name(args.file, raw, args.template)
    return diff_outcome(changes().preview_template(name, raw))


def render_rollouts(data: dict[str, Any], out: TextIO) -> None:
    for r in data["rollouts"]:
        print(f"{r['rolloutId']}  {r['createdAt']}  {r['kind']:<9} {r['source']:<40} {r['state']:<11} "
              f"{r['affected']:>5} sensors  {r['templateVersion'] or ''}  {r['changedBy']}", file=out)
    if not data["rollouts"]:
        print("no rollouts", file=out)


def render_rollout(data: dict[str, Any], out: TextIO) -> None:
    print(f"rollout {data['rolloutId']}: {data['kind']} {data['source']} ({data['sourceEtag']})", file=out)
    print(f"  state      {data['state']}" + (f" ({data['reason']})" if data["reason"] else ""), file=out)
    print(f"  version    {data['previousVersion'] or '-'} -> {data['templateVersion'] or '-'}", file=out)
    print(f"  changed by {data['changedBy']} at {data['createdAt']}", file=out)
    if data["detail"]:
        print(f"  detail     {data['detail']}", file=out)
    print(f"  sensors    {data['affected']} in {data['waveCount']} waves", file=out)
    for wave in data["waves"]:
        states = ", ".join(f"{k} {v}" for k, v in wave["states"].items())
        print(f"    wave {wave['wave']}{' (canary)' if wave['canary'] else ''}: {wave['sensors']} sensors: {states}",
              file=out)
    for device_id, reason in data["failed"].items():
        print(f"  failed     {device_id}: {reason}", file=out)


def run_rollouts(args: argparse.Namespace) -> Outcome:
    service = changes()
    if args.rollout_id:
        return Outcome(service.status(args.rollout_id), render_rollout)
    return Outcome({"rollouts": [r.as_dict() for r in service.store.recent()]}, render_rollouts)


def run_resume(args: argparse.Namespace) -> Outcome:
    service = changes()
    service.resume(args.rollout_id, actor())
    return Outcome(service.status(args.rollout_id), render_rollout)


def run_rollback(args: argparse.Namespace) -> Outcome:
    service = changes()
    restored = service.rollback(args.rollout_id, actor())
    if restored is None:
        return Outcome(service.status(args.rollout_id), render_rollout)
    return Outcome(service.status(restored.rollout_id), render_rollout)


def render_drift(data: dict[str, Any], out: TextIO) -> None:
    mode = "re-applied" if data["applied"] else "report only"
    print(f"drift ({mode}): {data['scanned']} sensors checked, {data['drifted']} drifted (missed "
          f"{data['missed']}, edited {data['edited']}), {data['unacknowledged']} not acknowledged, "
          f"{data['errors']} errors, {data['held']} held by running or halted rollouts"
          + (f", {data['repaired']} re-applied" if data["applied"] else ""), file=out)
    for group in data["groups"]:
        counts = ", ".join(f"{k} {v}" for k, v in group.items() if k not in ("facility", "template"))
        print(f"  {group['facility']:<8} {group['template']:<12} {counts}", file=out)
    for sensor in data["sensors"]:
        print(f"    {sensor['deviceId']} ({sensor['hub']}): {sensor['kind']}"
              + (f" {sensor['detail']}" if sensor["detail"] else "")
              + (f" -> {sensor['outcome']}" if sensor["outcome"] else ""), file=out)
    if data["incompleteHubs"]:
        print(f"  not checked (hub unavailable): {', '.join(data['incompleteHubs'])}", file=out)


def run_drift(args: argparse.Namespace) -> Outcome:
    from shared.bootstrap import services
    from twin_setup.drift import build_drift, drift_query

    drift_query(args.template, args.facility)  # validates both before any connection
    report = build_drift(services()).run(apply=args.apply, template=args.template, facility=args.facility,
                                         actor=actor())
    data = report.as_dict()
    failure = None
    if report.incomplete_hubs:
        failure = OnboardingError("dependency_unavailable",
                                  f"hubs not checked: {', '.join(report.incomplete_hubs)}")
    elif report.drifted - report.repaired > 0:
        failure = OnboardingError("configuration_drift",
                                  f"{report.drifted - report.repaired} sensors differ from template (+) overrides"
                                  + ("" if args.apply else "; --apply re-applies them"))
    return Outcome(data, render_drift, failure)
