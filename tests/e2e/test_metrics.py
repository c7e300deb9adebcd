"""End to end: `sso dev` as a user runs it; its web app's /metrics carries the worker's
Temporal runtime metrics (ours among them) with nothing personal in any label, and its logs
name each request."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.metrics import assert_nothing_personal, value
from tests.support.stack import DevStack, SmtpSink

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

GUARD_SECONDS = 60.0  # real-time guard for polling (2 cores, cold worker)


async def test_metrics_include_the_workers_and_nothing_personal(stack: DevStack, smtp: SmtpSink) -> None:
    address = f"jo.{uuid.uuid4().hex[:8]}@example.com"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30, trust_env=False) as http:
        admin = {"Authorization": f"Bearer {stack.admin_key}"}
        created = await http.post(
            "/api/v1/staff",
            headers=admin,
            json={"first_name": "Jo", "last_name": "Bloggs", "external_email_1": address},
        )
        assert created.status_code == 201, created.text
        staff_id = created.json()["id"]
        sent = await http.post(f"/api/v1/staff/{staff_id}/sso-email", headers=admin)
        assert sent.status_code == 202, sent.text

        # On the development machine itself /metrics needs no credentials.
        deadline = time.monotonic() + GUARD_SECONDS
        while True:
            answer = await http.get("/metrics", headers={"X-Request-ID": "e2e-metrics"})
            assert answer.status_code == 200, answer.text
            text = answer.text
            # The email is counted by its activity, the step by the flow once the activity's
            # result reaches it: a moment later on a busy machine.
            emailed = value(text, "sso_emails_sent_total", backend="smtp") >= 1
            if emailed and value(text, "sso_flow_steps_total", kind="sso_setup", step="email_sent") >= 1:
                break
            assert time.monotonic() < deadline, f"no email counted in time:\n{text[-3000:]}"
            await asyncio.sleep(0.5)

    assert answer.headers["x-request-id"] == "e2e-metrics"
    names = {f.name for f in text_string_to_metric_families(text)}
    assert value(text, "sso_worker_metrics_up") == 1
    assert {"temporal_request", "temporal_workflow_task_execution_latency"} <= names
    assert value(text, "sso_flows_started_total", kind="sso_setup", task_queue="sso") >= 1
    assert value(text, "sso_flow_steps_total", kind="sso_setup", step="email_sent") >= 1
    assert any(m.rcpt_tos == [address] for m in smtp.messages)
    assert_nothing_personal(text, address, staff_id)

    # The web app's own log line for that scrape names the request.
    lines = [json.loads(line) for line in stack.output().splitlines() if line.startswith("{")]
    scrapes = [
        e
        for e in lines
        if e["logger"] == "uvicorn.access"
        and "/metrics" in e["message"]
        and e.get("request_id") == "e2e-metrics"
    ]
    assert scrapes, stack.output()[-3000:]
