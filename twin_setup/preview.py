"""What will this device's twin say, and why? `onboarding preview sensor-temp-FAC03-SN482019`

Builds the configuration exactly as on_device_created does (the template from Blob, the facility's overrides
from SQL, the same merge, validation and size rules) without touching any hub, and prints the desired
properties document, its size against the budget and IoT Hub's limit (and so whether it goes to the twin or
to Blob with a pointer), the edge deployment for gateways, and where each value came from: the template or
which facility override (and which values an override deleted).

--template-file previews a template before it is uploaded; --json prints one machine-readable document.
Exit status: 0 previewed, 2 the device would fail permanently (the error code is printed), 1 other errors.
`python -m twin_setup.preview` is an alias of `onboarding preview` (cli/preview.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from shared.errors import OnboardingError
from shared.identity import parse_device_id
from twin_setup.configuration import explain_configuration, parse_template, template_blob_name
from twin_setup.document import size_of
from twin_setup.merge import dotted
from twin_setup.plan import ONBOARDING, TwinView, desired_document, onboarding_desired


def _short(value: Any, width: int = 48) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


def preview(device_id: str, template_file: Path | None = None, service=None) -> dict[str, Any]:
    """The preview as data (raises OnboardingError when the device would fail)."""
    if service is None:
        from shared.bootstrap import services
        from twin_setup.wiring import build_twin_setup

        service = build_twin_setup(services())
    cfg = service.settings
    identity = parse_device_id(device_id)
    if template_file is not None:
        template = parse_template(identity.template, _read(template_file), cfg.limits, "(local file)")
    else:
        template = service.templates.get(identity.template)
    overrides = service.overrides.for_device(identity.facility, identity.template)
    config, merged = explain_configuration(identity, template, overrides, cfg.limits)
    empty_twin = TwinView(device_id, None, {}, {}, config.edge is not None)
    url = service.configurations.url(device_id, config.hash)
    storage, document, blob = desired_document(config, empty_twin, cfg.limits, cfg.essential_sections, url)
    return {
        "deviceId": device_id,
        "identity": {"typeCode": identity.type_code, "template": identity.template, "facility": identity.facility,
                     "serial": identity.serial},
        "template": {"blob": template_blob_name(template.name), "version": template.version, "etag": template.etag},
        "layers": list(config.layers),
        "configurationHash": config.hash,
        "storage": storage,
        "desiredBytes": size_of(document),
        "fullBytes": size_of({**config.desired, ONBOARDING: onboarding_desired(config)}),
        "budgetBytes": cfg.limits.budget_bytes,
        "limitBytes": cfg.limits.desired_bytes,
        "blobBytes": len(blob) if blob is not None else None,
        "configurationUrl": url if storage == "blob" else None,
        "edgeModules": sorted(config.edge) if config.edge is not None else None,
        "desired": document,
        "sources": {dotted(path): layer for path, layer in sorted(merged.sources.items())},
        "deleted": {dotted(path): layer for path, layer in sorted(merged.deleted.items())},
        "values": {dotted(path): _value_at(merged.document, path) for path in sorted(merged.sources)},
    }


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise OnboardingError("invalid_request", f"--template-file {path}: {exc.strerror or exc}") from None


def _value_at(document: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = document
    for key in path:
        value = value[key]
    return value


def render(result: dict[str, Any], out=None) -> None:
    out = out or sys.stdout

    def line(name: str, text: str) -> None:
        print(f"  {name:<10} {text}", file=out)

    identity, template = result["identity"], result["template"]
    print(f"{result['deviceId']}:", file=out)
    line("identity", f"type {identity['typeCode']} (template {identity['template']}), facility "
                     f"{identity['facility']}, serial {identity['serial']}")
    line("template", f"{template['blob']} version {template['version']} (etag {template['etag']})")
    line("layers", " < ".join(result["layers"]))
    line("hash", result["configurationHash"])
    share = result["fullBytes"] / result["limitBytes"]
    if result["storage"] == "twin":
        where = "fits: written to the twin's desired properties"
    else:
        kept = ", ".join(sorted(k for k in result["desired"] if k != ONBOARDING)) or "no sections"
        where = (f"too large: the full document ({result['blobBytes']} bytes of JSON) goes to Blob; the twin gets "
                 f"{result['desiredBytes']} bytes: the pointer and {kept}")
    line("size", f"{result['fullBytes']} bytes as desired properties; budget {result['budgetBytes']}, IoT Hub limit "
                 f"{result['limitBytes']} ({share:.0%} of the limit) -> {where}")
    if result["configurationUrl"]:
        line("blob", result["configurationUrl"])
    if result["edgeModules"] is not None:
        line("edge", f"{len(result['edgeModules'])} modules ({', '.join(result['edgeModules'])}) applied with "
                     "applyConfigurationContent, not written to desired properties")
    print("\n  where each value comes from:", file=out)
    width = min(60, max((len(p) for p in [*result["sources"], *result["deleted"]]), default=10) + 2)
    for path, layer in result["sources"].items():
        print(f"    {path:<{width}} {_short(result['values'][path]):<50} {layer}", file=out)
    for path, layer in result["deleted"].items():
        print(f"    {path:<{width}} {'(deleted)':<50} {layer}", file=out)
    print("\n  desired properties written by twin setup:", file=out)
    for text in json.dumps(result["desired"], indent=2, sort_keys=True).splitlines():
        print(f"    {text}", file=out)


def main(argv: list[str] | None = None) -> int:
    """`python -m twin_setup.preview ...`: the same command as `onboarding preview ...`."""
    from cli.main import run_alias

    return run_alias(["preview", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
