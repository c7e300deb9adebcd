"""Every metric the service emits, and the helpers that record them.

The web app records into REGISTRY (prometheus_client), served at /metrics. Flows and emails
are counted where they happen, on the worker, through Temporal's meters: the workflow meter
records nothing while a history replays and adds no command, so counting cannot change a
flow; the worker's Temporal runtime serves these with its own `temporal_*` metrics.

Label values come from fixed vocabularies in the code, never from people: `label()` turns
anything else into "other", so an email address or id can never become a label value.

With SSO_METRICS_ORG_LABELS on (`configure`), the sign-in and email counters carry an `org`
label too: the organisation's slug (a business's name, chosen by an operator). Off by default:
each organisation multiplies those series.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from temporalio import activity, workflow

# Temporal's Prometheus exporter keeps custom names exactly as given (no prefix, no suffix):
# ours carry `_total` themselves, like prometheus_client's counters beside them.
FLOWS_STARTED = "sso_flows_started_total"
FLOWS_ENDED = "sso_flows_ended_total"
FLOW_STEPS = "sso_flow_steps_total"
EMAILS_SENT = "sso_emails_sent_total"
EMAIL_FAILURES = "sso_email_failures_total"
EMAILS_DUPLICATE = "sso_emails_duplicate_total"

SETUP = "sso_setup"
RESET = "password_reset"
ENTRA_LINK = "entra_link"

_SAFE = re.compile(r"[a-z][a-z0-9_]{0,39}")
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,61}[a-z0-9]")
_org_labels = False


def label(value: str | None) -> str:
    if not value:
        return "none"
    return str(value) if _SAFE.fullmatch(value) else "other"


def org_labels() -> bool:
    """Whether the counters carry the `org` label (SSO_METRICS_ORG_LABELS)."""
    return _org_labels


def _org(slug: str | None) -> dict[str, str]:
    """The `org` label, when on: an organisation's slug, "none" when the person is unknown."""
    if not _org_labels:
        return {}
    return {"org": slug if slug and _SLUG.fullmatch(slug) else "none"}


# -- on the worker: flows (workflow code only) ---------------------------------------------


def _flow_org(slug: str | None) -> dict[str, str]:
    """The `org` label of a flow counter: the slug its input carries, which the web app sets
    only while SSO_METRICS_ORG_LABELS is on (the workflow sandbox has its own copy of this
    module, so the setting itself is not read here)."""
    if not slug:
        return {}
    return {"org": slug if _SLUG.fullmatch(slug) else "other"}


def flow_started(kind: str, org: str | None = None) -> None:
    """`org`: the organisation's slug the flow's input carries ("" with the labels off)."""
    workflow.metric_meter().create_counter(FLOWS_STARTED, "Flows that started, by kind").add(
        1, {"kind": label(kind), **_flow_org(org)}
    )


def flow_step(kind: str, step: str, org: str | None = None) -> None:
    workflow.metric_meter().create_counter(FLOW_STEPS, "Flows that reached a step, by kind and step").add(
        1, {"kind": label(kind), "step": label(step), **_flow_org(org)}
    )


def flow_ended(kind: str, outcome: str, step: str, org: str | None = None) -> None:
    """`step` is the last open step, where the flow stood when it ended."""
    workflow.metric_meter().create_counter(
        FLOWS_ENDED, "Flows that ended, by kind, outcome and the step they ended at"
    ).add(1, {"kind": label(kind), "outcome": label(outcome), "step": label(step), **_flow_org(org)})


# -- on the worker: email deliveries (activity code only) ----------------------------------
# Senders also run outside activities (tests, scripts): there, nothing is counted.


def email_sent(backend: str, org: str | None = None) -> None:
    if activity.in_activity():
        activity.metric_meter().create_counter(EMAILS_SENT, "Emails handed to the backend, by backend").add(
            1, {"backend": label(backend), **_org(org)}
        )


def email_failed(backend: str, failure: str, org: str | None = None) -> None:
    """`failure`: transient (retried), permanent (given up) or error (unexpected, retried)."""
    if activity.in_activity():
        activity.metric_meter().create_counter(
            EMAIL_FAILURES, "Email attempts that failed, by backend and kind of failure"
        ).add(1, {"backend": label(backend), "failure": label(failure), **_org(org)})


def email_duplicate(kind: str) -> None:
    """A retry emails again what an earlier attempt may already have handed to the mail
    server (its worker died before recording the answer): the person may get two copies,
    carrying the same link or code. `kind` is the email's template name."""
    if activity.in_activity():
        activity.metric_meter().create_counter(
            EMAILS_DUPLICATE, "Emails sent again after an attempt that may have delivered them, by kind"
        ).add(1, {"kind": label(kind)})


# -- in the web app ------------------------------------------------------------------------

# A series per label set is enough; `_created` twins would double what Prometheus stores.
disable_created_metrics()

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)


def _sign_ins(by_org: bool) -> Counter:
    return Counter(
        "sso_sign_ins",
        "Sign-in attempts by outcome (and reason, for refusals)" + (" and organisation" if by_org else ""),
        ["outcome", "reason", *(["org"] if by_org else [])],
        registry=REGISTRY,
    )


SIGN_INS = _sign_ins(False)


def configure(org_labels: bool) -> None:
    """SSO_METRICS_ORG_LABELS, for this process (the web app's and the worker's start): the
    sign-in counter is made again with or without its `org` label (it starts from zero then)."""
    global SIGN_INS, _org_labels
    if org_labels == _org_labels:
        return
    REGISTRY.unregister(SIGN_INS)
    SIGN_INS = _sign_ins(org_labels)
    _org_labels = org_labels


STEP_SECONDS = Histogram(
    "sso_step_duration_seconds",
    "Time the web app waited for a flow step, by step and outcome",
    ["step", "outcome"],
    registry=REGISTRY,
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


def worker_scrape_text(up: bool) -> str:
    """Said afresh at each scrape, and only when a worker URL is set: a registry of its own."""
    registry = CollectorRegistry()
    Gauge(
        "sso_worker_metrics_up",
        "1 when this scrape read the worker's metrics (SSO_WORKER_METRICS_URL), 0 when that failed",
        registry=registry,
    ).set(int(up))
    return generate_latest(registry).decode()


def sign_in(outcome: str, reason: str | None = None, org: str | None = None) -> None:
    """`org`: the slug of the person's organisation, when the person is known."""
    SIGN_INS.labels(outcome=label(outcome), reason=label(reason), **_org(org)).inc()


@dataclass
class StepTiming:
    outcome: str | None = None


@asynccontextmanager
async def timed_step(step: str) -> AsyncIterator[StepTiming]:
    """Times the body. The caller may name the outcome (e.g. "rejected"); otherwise an
    exception names it through a `step_outcome` attribute ("error" without one), and a body
    that ends normally is "ok"."""
    timing = StepTiming()
    started = time.perf_counter()
    try:
        yield timing
    except asyncio.CancelledError:
        timing.outcome = timing.outcome or "cancelled"
        raise
    except BaseException as exc:
        timing.outcome = timing.outcome or str(getattr(exc, "step_outcome", "error"))
        raise
    finally:
        STEP_SECONDS.labels(label(step), label(timing.outcome or "ok")).observe(time.perf_counter() - started)
