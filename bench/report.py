"""The benchmark's table, and its figures against the targets."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

# Page steps that do no password hashing: the 50 ms target applies to these.
HASH_STEP = "page: set password (argon2 hash)"
KEYCLOAK_SIGNINS_PER_CORE = 15.0
# Keycloak's sizing guide: refresh token grants per second per vCPU; issue 16 asks for twice.
KEYCLOAK_REFRESHES_PER_CORE = 120.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def typical(rows: list[dict[str, int]]) -> dict[str, Any]:
    """The median flow's actions by kind, and the spread of totals."""
    totals = [sum(row.values()) for row in rows]
    kinds = sorted({kind for row in rows for kind in row})
    return {
        "flows": len(rows),
        "median_total": statistics.median(totals),
        "min_total": min(totals),
        "max_total": max(totals),
        "median_by_kind": {k: statistics.median(row.get(k, 0) for row in rows) for k in kinds},
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    keycloak = results.get("signin_keycloak", {}).get("sign_ins_per_second_per_core")
    ceiling = results.get("hash_ceiling", {}).get("keycloak")
    if keycloak is not None:
        found.append(
            _target(
                "sign-ins/s/core at Keycloak's argon2id settings", keycloak, ">=", KEYCLOAK_SIGNINS_PER_CORE
            )
        )
    if keycloak is not None and ceiling:
        found.append(_target("… as a share of the pure hash ceiling", keycloak / ceiling, ">=", 0.60))
    for key, database in (("oidc", "SQLite"), ("oidc_postgresql", "PostgreSQL")):
        refreshes = results.get(key, {}).get("refresh_grants_per_second_per_core")
        if refreshes is not None:
            twice = 2 * KEYCLOAK_REFRESHES_PER_CORE
            name = f"refresh grants/s per core of the web app ({database}), twice Keycloak's"
            found.append(_target(name, refreshes, ">=", twice))
    ours = results.get("signin_ours", {}).get("sign_ins_per_second_per_core")
    if ours is not None and results.get("hash_ceiling", {}).get("ours"):
        found.append(
            _target(
                "sign-ins/s/core at our settings, share of ceiling",
                ours / results["hash_ceiling"]["ours"],
                ">=",
                0.60,
            )
        )
    steps = results.get("onboarding", {}).get("steps", {})
    cheap = [v["p95_ms"] for k, v in steps.items() if k.startswith("page:") and k != HASH_STEP]
    if cheap:
        found.append(
            _target(
                f"page-step p95 (hash excluded) at {results['onboarding']['people']} people, worst step, ms",
                max(cheap),
                "<",
                50.0,
            )
        )
    idle = results.get("cheap_idle", {}).get("probe_idle_p99_ms")
    busy = results.get("signin_ours", {}).get("probe_saturated_p99_ms")
    if idle and busy:
        found.append(_target("cheap page p99 under saturated sign-in / idle p99", busy / idle, "<=", 2.0))
    faults = results.get("faults")
    if faults and faults.get("recovery_s") is not None:
        found.append(
            _target(
                f"seconds from the last fault to the last person done ({faults['people']} people onboarding)",
                faults["recovery_s"],
                "<=",
                30.0,
            )
        )
        found.append(_target("… people active at the end", faults["active"], ">=", faults["people"]))
    onboarding = results.get("actions", {}).get("onboarding without MFA")
    if onboarding:
        found.append(
            _target("billable actions per onboarding without MFA", onboarding["median_total"], "<=", 12)
        )
    return found


def _target(name: str, value: float, op: str, goal: float) -> dict[str, Any]:
    met = {">=": value >= goal, "<": value < goal, "<=": value <= goal}[op]
    return {"target": name, "value": value, "goal": f"{op} {goal:g}", "met": met}


def table(results: dict[str, Any]) -> str:
    lines = [
        f"Benchmark {results['when']} on {results['machine']['cores']} cores "
        f"({results['machine']['cpu']}), Python {results['machine']['python']}",
        "",
    ]
    lines += ["| figure | value |", "|---|---|"]
    if "hash_ceiling" in results:  # not measured by `--only oidc`
        ceiling = results["hash_ceiling"]
        lines += [
            f"| argon2id verifications/s/core, ours (t=2, m=19 MiB) | {ceiling['ours']:.1f} |",
            f"| argon2id verifications/s/core, Keycloak's (t=5, m=7 MiB) | {ceiling['keycloak']:.1f} |",
        ]
    for key, label in (("signin_ours", "ours"), ("signin_keycloak", "Keycloak's")):
        if key in results:
            row = results[key]
            lines.append(
                f"| sign-ins/s/core at {label} settings (p50 / p99 ms) | "
                f"{row['sign_ins_per_second_per_core']:.1f} "
                f"({_ms(row['p50_ms'])} / {_ms(row['p99_ms'])}) |"
            )
    for key, database in (("oidc", ""), ("oidc_postgresql", " (PostgreSQL)")):
        if key in results:
            lines += _oidc_lines(results[key], database)
    if "cheap_idle" in results:
        row = results["cheap_idle"]
        lines.append(
            f"| sign-in page views/s/core (p50 / p99 ms) | "
            f"{row['page_views_per_second_per_core']:.0f} "
            f"({_ms(row['p50_ms'])} / {_ms(row['p99_ms'])}) |"
        )
        busy = results.get("signin_ours", {}).get("probe_saturated_p99_ms", math.nan)
        lines.append(
            f"| one person's page p99, idle / sign-in saturated, ms | "
            f"{_ms(row['probe_idle_p99_ms'])} / {_ms(busy)} |"
        )
    if "code_checks" in results:
        row = results["code_checks"]
        lines.append(
            f"| code checks/s/core (an Update each; p50 / p99 ms) | "
            f"{row['code_checks_per_second_per_core']:.1f} "
            f"({_ms(row['p50_ms'])} / {_ms(row['p99_ms'])}) |"
        )
    if "reset_wrong_code" in results:
        known, unknown = (results["reset_wrong_code"][k] for k in ("known", "unknown"))
        lines.append(
            f"| wrong reset code, real account / unknown address (p50; p90 ms) | "
            f"{_ms(known['p50_ms'])} / {_ms(unknown['p50_ms'])} "
            f"({_ms(known['p90_ms'])} / {_ms(unknown['p90_ms'])}) |"
        )
    if "onboarding" in results:
        row = results["onboarding"]
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in row["cpu_seconds_per_flow"].items())
        lines += [
            f"| onboardings completed/s ({row['people']} at once, half with MFA) | "
            f"{row['flows_per_second']:.2f} |",
            f"| CPU seconds per onboarding | {cpu} |",
        ]
    for kind, row in results.get("actions", {}).items():
        parts = ", ".join(f"{k} {v:g}" for k, v in row["median_by_kind"].items())
        lines.append(
            f"| billable actions per {kind} (median of {row['flows']}) | {row['median_total']:g} ({parts}) |"
        )
    if "scale" in results:
        row = results["scale"]
        mem = ", ".join(
            f"{k} {row['memory_mib_before'].get(k, 0):.0f} → {v:.0f}"
            for k, v in row["memory_mib_waiting"].items()
        )
        lines += [
            f"| {row['waiting']} setups waiting on their link: started in | {row['start_seconds']:.0f} s |",
            f"| … memory MiB (before → waiting) | {mem} |",
        ]
        worst = max(
            (
                v["p95_ms"]
                for k, v in row["one_more_person_steps"].items()
                if k.startswith("page:") and k != HASH_STEP
            ),
            default=math.nan,
        )
        lines.append(f"| … one more person's slowest page step (hash excluded), ms | {_ms(worst)} |")
    if "faults" in results:
        row = results["faults"]
        faults = ", ".join(f"{f['kind']} at {f['at_s']:g} s" for f in row["faults"])
        lines += [
            f"| {row['people']} people onboarding under faults ({faults}; "
            f"{row['database']}, seed {row['seed']}): active | "
            f"{row['active']}/{row['people']} |",
            f"| … last person done after the last fault was over | {_seconds(row['recovery_s'])} |",
            f"| … people who got a duplicate setup / code email (same link or code) | "
            f"{row['people_with_duplicate_setup_emails']} / "
            f"{row['people_with_duplicate_code_emails']} |",
        ]
    if "onboarding" in results:
        lines += [
            "",
            "Page steps during onboarding (ms):",
            "",
            "| step | n | p50 | p95 | p99 |",
            "|---|---|---|---|---|",
        ]
        for step, row in results["onboarding"]["steps"].items():
            lines.append(
                f"| {step} | {row['n']} | {_ms(row['p50_ms'])} | {_ms(row['p95_ms'])} "
                f"| {_ms(row['p99_ms'])} |"
            )
    lines += ["", "Targets:", "", "| target | value | goal | met |", "|---|---|---|---|"]
    for row in results.get("targets", []):
        lines.append(
            f"| {row['target']} | {row['value']:.2f} | {row['goal']} | {'yes' if row['met'] else '**no**'} |"
        )
    return "\n".join(lines)


def _oidc_lines(row: dict[str, Any], database: str) -> list[str]:
    lines = [
        _oidc_line(row, f"codes issued and redeemed{database}", "code_redemptions", "code_flow"),
        _oidc_line(row, f"userinfo requests{database}", "userinfo", "userinfo"),
    ]
    if "refresh_grants_per_second_per_core" in row:
        lines.append(_oidc_line(row, f"refresh grants{database}", "refresh_grants", "refresh"))
        lines.append(
            f"| refresh grants/s per core{database}: ours / Keycloak: {KEYCLOAK_REFRESHES_PER_CORE:.0f} "
            f"per vCPU (its sizing guide) / target {2 * KEYCLOAK_REFRESHES_PER_CORE:.0f} | "
            f"{row['refresh_grants_per_second_per_core']:.0f} / {KEYCLOAK_REFRESHES_PER_CORE:.0f} / "
            f"{2 * KEYCLOAK_REFRESHES_PER_CORE:.0f} |"
        )
    return lines


def _oidc_line(row: dict[str, Any], label: str, rate: str, latency: str) -> str:
    """Per core of the web app (per its CPU-second; see bench/oidc.py), then per wall-clock
    second with the web app's cores used, latency and the web app's CPU per request."""
    per_core = row[f"{rate}_per_second_per_core"]
    wall = row.get(f"{rate}_per_second", math.nan)
    used = row.get(f"{rate}_web_cores_used", math.nan)
    cpu = row.get(f"cpu_seconds_per_{latency}", {}).get("web", math.nan) * 1000
    return (
        f"| {label}/s per core of the web app (/s on {used:.2f} web cores; p50 / p99 ms; web CPU ms each) | "
        f"{per_core:.0f} ({wall:.0f}; {_ms(row[f'{latency}_p50_ms'])} / {_ms(row[f'{latency}_p99_ms'])}; "
        f"{cpu:.2f}) |"
    )


def _seconds(value: float | None) -> str:
    return "n/a (not everyone finished)" if value is None else f"{value:.1f} s"


def _ms(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.0f}"
