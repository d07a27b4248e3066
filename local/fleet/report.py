"""The rollout's summary table (terminal) and HTML report with plots (inline SVG: no plotting dependency)."""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path

from local.fleet.scenario import ScenarioResult, refusal_label, summary_rows, to_json
from local.fleet.usage import summary_lines as usage_lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def print_summary(result: ScenarioResult) -> None:
    rows = summary_rows(result)
    print(f"\n{'sensors powered on':<40}{rows['devices']}")
    print(f"{'configured':<40}{rows['configured']}")
    for hub, count in rows["byHub"].items():
        print(f"{'  on ' + hub:<40}{count}")
    for reason, count in rows["refusals"].items():
        print(f"{refusal_label(reason):<40}{count}")
    print(f"{'power-on to configured p50 / p95':<40}{_ms(rows['p50'])} / {_ms(rows['p95'])} (max {_ms(rows['max'])})")
    print(f"{'power-on to first telemetry p50 / p95':<40}{_ms(rows['telemetryP50'])} / {_ms(rows['telemetryP95'])}")
    funnel = rows.get("funnel") or {}
    if funnel.get("stages"):
        stages = funnel["stages"]
        recorded = funnel.get("powerOnToLiveRecorded") or {}
        print(f"{'funnel (as recorded by the product)':<40}" + " -> ".join(f"{k} {v}" for k, v in stages.items()))
        print(f"{'acknowledged / live':<40}{stages['acknowledged']} / {stages['live']}  (allocation to live as "
              f"recorded: p50 {_ms(recorded.get('p50'))}, p95 {_ms(recorded.get('p95'))})")
        print(f"{'silent sensors caught as stuck':<40}{funnel['silentStuck']}/{funnel['silent']}, "
              f"{funnel['silentInDigest']} in their manager's digest ({'; '.join(funnel['digests']) or 'none'})")
    elif funnel.get("skipped"):
        print(f"{'funnel':<40}not checked: {funnel['skipped']}")
    print(f"{'configuration errors':<40}{rows['configurationErrors']}")
    if rows.get("templateChange"):
        from local.fleet.template_change import summary_line

        print(f"{'template change mid-run':<40}{summary_line(rows['templateChange'])}")
    storm = result.storm
    print(f"{'redelivery storm':<40}{storm.get('deliveries', 0)} deliveries for {storm.get('devices', 0)} "
          f"sensors, {storm.get('rewritten', 0)} twins rewritten")
    life = result.lifecycle
    if life:
        print(f"{'certificate renewals (time travel)':<40}{life['reprovisioned']}/{life['agedSensors']} renewed and "
              f"re-provisioned through DPS ({life['refusedUnauthorized']} refused unauthorized before "
              f"re-provisioning), {life['supersededRevoked']} superseded"
              + (f"; {life['movedHub']} moved back to their region's hub" if life.get("movedHub") else ""))
    for name, value in result.incidents.items():
        print(f"{'incident ' + name:<40}{value}")
    for line in usage_lines(result.usage):
        print(line)
    print(f"{'wall time':<40}{result.wall_s:.1f} s (manufacture {result.manufacture_s:.1f} s, "
          f"power-on to all configured {result.onboarding_s:.1f} s)")
    if result.phases:
        print(f"{'  by step':<40}" + ", ".join(f"{name} {s:.1f} s" for name, s in result.phases.items()))
    rates = throughput(result)
    if rates:
        print(f"{'throughput (sensors per second)':<40}" + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))


def throughput(result: ScenarioResult) -> dict[str, float]:
    """Sensors per second: manufactured over the manufacture step, powered on over the power-on step (first power-on
    to the last sensor configured or refused)."""
    rates = {}
    if result.manufacture_s:
        stranger = result.incidents.get("unknownFacility")  # not made by the factory
        made = sum(1 for o in result.outcomes if o.device.device_id != stranger)
        rates["manufacture"] = made / result.manufacture_s
    if result.onboarding_s:
        rates["power-on"] = len(result.outcomes) / result.onboarding_s
    return rates


def _bars(title: str, items: list[tuple[str, float]], width: int = 640, unit: str = "") -> str:
    height, bar_h = 30 + 24 * len(items), 18
    top = max((v for _, v in items), default=1) or 1
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="0" y="16" font-weight="bold">{html.escape(title)}</text>']
    for i, (label, value) in enumerate(items):
        y = 28 + i * 24
        w = (width - 260) * value / top
        parts.append(f'<text x="0" y="{y + 13}" font-size="12">{html.escape(label)}</text>'
                     f'<rect x="180" y="{y}" width="{w:.1f}" height="{bar_h}" fill="#2b7bb9"/>'
                     f'<text x="{185 + w:.1f}" y="{y + 13}" font-size="12">{value:g}{unit}</text>')
    return "".join(parts) + "</svg>"


def _histogram(values: list[float], bins: int, label_fmt) -> list[tuple[str, float]]:
    if not values:
        return []
    low, high = min(values), max(values)
    step = (high - low) / bins or 1
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - low) / step))] += 1
    return [(label_fmt(low + i * step, low + (i + 1) * step), c) for i, c in enumerate(counts)]


def _timeline(result: ScenarioResult, width: int = 640, height: int = 220) -> str:
    done = sorted(o.sensor.timeline.configured for o in result.outcomes if o.sensor.timeline.configured)
    starts = [o.sensor.timeline.powered_on for o in result.outcomes if o.sensor.timeline.powered_on]
    if not done or not starts:
        return ""
    t0, t1 = min(starts), max(done)
    span = (t1 - t0) or 1
    plot_w, plot_h = width - 60, height - 60
    points = " ".join(f"{40 + (t - t0) / span * plot_w:.1f},{height - 30 - (i + 1) / len(done) * plot_h:.1f}"
                      for i, t in enumerate(done))
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="onboarding timeline">'
            f'<text x="0" y="16" font-weight="bold">Sensors configured over time</text>'
            f'<polyline fill="none" stroke="#2b7bb9" stroke-width="2" points="{points}"/>'
            f'<text x="40" y="{height - 10}" font-size="12">0 s</text>'
            f'<text x="{width - 60}" y="{height - 10}" font-size="12">{span:.1f} s</text>'
            f'<text x="0" y="{height - 30}" font-size="12">0</text><text x="0" y="40" font-size="12">{len(done)}</text>'
            "</svg>")


def _change_line(change: dict | None) -> str:
    from local.fleet.template_change import summary_line

    return summary_line(change) if change else "not part of this run"


def write_report(result: ScenarioResult, directory: Path) -> Path:
    rows = summary_rows(result)
    per_sensor = result.usage.get("perSensor") or {}
    now = dt.datetime.now(dt.UTC)
    latencies = [o.latency_s for o in result.outcomes if o.latency_s is not None]
    # As the daily scan saw them: the aged cohort with the certificates it had before renewal.
    scanned = [o.sensor.certificate for o in result.outcomes if o.sensor.certificate is not None]
    scanned += [o.sensor.renewed_from or o.sensor.certificate for o in result.aged]
    buckets = [("expired", None, 0), ("0-30 days", 0, 30), ("30-90 days", 30, 90), ("90-365 days", 90, 365),
               ("over a year", 365, None)]
    by_days = dict.fromkeys((name for name, _, _ in buckets), 0)
    for cert in scanned:
        days = (cert.not_valid_after_utc - now).total_seconds() / 86400
        for name, low, high in buckets:
            if (low is None or days >= low) and (high is None or days < high):
                by_days[name] += 1
                break
    sections = [
        _timeline(result),
        _bars("Sensors per hub", list(rows["byHub"].items())),
        _bars("Refused or failed, by reason",
              [(refusal_label(r).removeprefix("refused/failed: ").replace("refused by DPS", "DPS"), c)
               for r, c in rows["refusals"].items()]),
        _bars("Power-on to configured (seconds)", _histogram(latencies, 10, lambda a, b: f"{a:.2f}-{b:.2f} s")),
        _bars("Onboarding funnel: sensors per stage reached (as the product recorded them)",
              list(((rows.get("funnel") or {}).get("stages") or {}).items())),
        _bars("Power-on to first telemetry (seconds)",
              _histogram([o.telemetry_latency_s for o in result.outcomes if o.telemetry_latency_s is not None], 10,
                         lambda a, b: f"{a:.2f}-{b:.2f} s")),
        _bars("Certificates by days to expiry, as the daily scan saw them", list(by_days.items())),
        _bars("Azure operations per configured sensor, onboarding (counted by the product)",
              list(per_sensor.get("onboarding", {}).get("groups", {}).items())),
    ]
    def text(value) -> str:
        if isinstance(value, dict):
            return ", ".join(f"{k}: {v}" for k, v in value.items())
        return "; ".join(value) if isinstance(value, list) else str(value)

    table = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(text(v))}</td></tr>" for k, v in [
        ("sensors powered on", rows["devices"]), ("configured", rows["configured"]),
        ("p50 / p95 power-on to configured", f"{_ms(rows['p50'])} / {_ms(rows['p95'])}"),
        ("p50 / p95 power-on to first telemetry", f"{_ms(rows['telemetryP50'])} / {_ms(rows['telemetryP95'])}"),
        ("onboarding funnel", {k: v for k, v in (rows.get("funnel") or {}).items() if k != "digests"}),
        ("configuration errors", rows["configurationErrors"]),
        ("template change mid-run", _change_line(rows.get("templateChange"))),
        ("redelivery storm", result.storm), ("incidents", result.incidents),
        ("certificate renewals", result.lifecycle),
        ("Azure operations per sensor, manufacture", per_sensor.get("manufacture", {}).get("groups", {})),
        ("Azure operations per sensor, onboarding", per_sensor.get("onboarding", {}).get("groups", {})),
        ("reached the hubs per sensor, onboarding", per_sensor.get("onboarding", {}).get("reachedHubs", {})),
        ("wall time", f"{result.wall_s:.1f} s"),
        ("throughput (sensors per second)", {k: round(v, 1) for k, v in throughput(result).items()}),
        ("by step", {name: f"{seconds:.1f} s" for name, seconds in result.phases.items()}),
        ("verification", "passed" if result.ok else result.failures)])
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>Onboarding rollout report</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}th{{text-align:left;padding-right:2em}}"
            f"svg{{display:block;margin:1.5em 0}}</style></head><body>"
            f"<h1>Onboarding rollout, {now:%Y-%m-%d %H:%M} UTC</h1><table>{table}</table>"
            + "".join(sections) + "</body></html>")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "index.html"
    path.write_text(page)
    (directory / "summary.json").write_text(to_json(result))
    return path
