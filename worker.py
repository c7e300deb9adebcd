"""The Temporal worker: connect, build activities, run until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.account import AccountActivities
from activities.email_change import EmailChangeActivities
from activities.email_delivery import MeteredSender, build_sender
from activities.entra import EntraActivities
from activities.housekeeping import HousekeepingActivities
from activities.lifecycle import LifecycleActivities
from activities.logout import LogoutActivities
from activities.mfa import MfaActivities
from activities.orgs import OrgActivities
from activities.reset import ResetActivities
from activities.setup import SetupStepActivities
from activities.setup_email import SetupActivities
from activities.shared import SharedActivities
from activities.staff_batch import StaffBatchActivities
from api.services.mfa_obligation import start_rollout
from core import metrics
from core.codec import keyring_from_settings
from core.db import SessionFactory, create_engine, session_factory
from core.logging import configure as configure_logging
from core.mfa_policy import last_applied_policy, org_policies_to_apply, remember_org_policy, remember_policy
from core.oidc import logout_outbox
from core.oidc.backchannel import SessionLogoutInput
from core.search_attributes import SSO_STEP
from core.settings import InsecureSettingsError, MfaPolicy, Settings, get_settings
from core.temporal_client import connect, exit_after_temporal
from workflows.common import WORKFLOW_TASK_TIMEOUT
from workflows.email_change import StaffEmailChangeWorkflow
from workflows.entra import EntraLinkWorkflow
from workflows.housekeeping import HOUSEKEEPING_WORKFLOW_ID, HousekeepingInput, HousekeepingWorkflow
from workflows.leave import StaffLeaveWorkflow
from workflows.logout import SessionLogoutWorkflow, logout_start_options
from workflows.mfa_enrollment import MfaEnrollmentWorkflow
from workflows.mfa_rollout import MfaPolicyRolloutWorkflow
from workflows.notices import MfaChangedNoticeWorkflow, PasswordChangedNoticeWorkflow
from workflows.org_erasure import OrgErasureWorkflow
from workflows.org_suspension import OrgSuspensionWorkflow
from workflows.reset import PasswordResetWorkflow
from workflows.setup import SsoSetupWorkflow
from workflows.staff_batch import StaffBatchWorkflow

logger = logging.getLogger(__name__)


def build_worker(client: Client, settings: Settings, engine: AsyncEngine | None = None) -> Worker:
    if not settings.seal_private_key.get_secret_value():
        raise InsecureSettingsError(
            "the worker needs SSO_SEAL_PRIVATE_KEY to open sealed passwords and codes"
        )
    metrics.configure(settings.metrics_org_labels)
    sessions = session_factory(engine or create_engine(settings.async_database_url))
    sender = MeteredSender(build_sender(settings, sessions, keyring_from_settings(settings)))
    keyring = keyring_from_settings(settings)
    setup = SetupActivities(settings, sessions, sender, keyring)
    steps = SetupStepActivities(settings, sessions, sender, keyring)
    shared = SharedActivities(settings, sessions, sender, keyring)
    reset = ResetActivities(settings, sessions, sender, keyring)
    entra = EntraActivities(settings, sessions, sender, keyring)
    account = AccountActivities(settings, sessions, sender, keyring)
    mfa = MfaActivities(settings, sessions, sender, keyring)
    logout = LogoutActivities(settings, sessions)
    lifecycle = LifecycleActivities(settings, sessions)
    email_change = EmailChangeActivities(settings, sessions, sender, keyring)
    batch = StaffBatchActivities(settings, sessions, client)
    orgs = OrgActivities(settings, sessions)
    housekeeping = HousekeepingActivities(settings, sessions)
    return Worker(
        client,
        task_queue=settings.task_queue,
        # A flow cached on a worker that died gets its next task there until this runs out
        # (the SDK's default is 10 s); a live worker picks it up in milliseconds.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=5),
        workflows=[
            SsoSetupWorkflow,
            PasswordResetWorkflow,
            PasswordChangedNoticeWorkflow,
            MfaChangedNoticeWorkflow,
            EntraLinkWorkflow,
            SessionLogoutWorkflow,
            MfaEnrollmentWorkflow,
            MfaPolicyRolloutWorkflow,
            StaffLeaveWorkflow,
            StaffEmailChangeWorkflow,
            StaffBatchWorkflow,
            OrgSuspensionWorkflow,
            OrgErasureWorkflow,
            HousekeepingWorkflow,
        ],
        activities=[
            setup.send_setup_email,
            setup.close_setup,
            steps.store_password,
            steps.confirm_email,
            steps.verify_totp,
            steps.activate_account,
            steps.record_link_opened,
            shared.send_code,
            shared.record_audit,
            reset.reset_password,
            reset.send_password_changed,
            reset.count_wrong_reset_code,
            reset.send_reset_link,
            entra.verify_entra_grant,
            entra.link_entra_identity,
            entra.send_entra_linked,
            account.send_mfa_changed,
            logout.send_logout_token,
            logout.record_logout_failure,
            mfa.record_mfa_obligation,
            mfa.check_mfa_obligation,
            mfa.send_mfa_reminder,
            mfa.next_mfa_rollout_people,
            mfa.next_mfa_rollout_batch,
            lifecycle.disable_leaver,
            email_change.apply_email_change,
            email_change.send_email_changed,
            email_change.drop_email_change,
            batch.send_batch_chunk,
            batch.record_batch_state,
            orgs.suspend_org_chunk,
            orgs.record_org_suspension,
            orgs.erase_org_chunk,
            orgs.finish_org_erasure,
            housekeeping.purge_table,
            housekeeping.record_housekeeping,
        ],
    )


class LogoutSweeper:
    """Starts the back-channel logouts owed in the outbox that nobody started: the web app
    died between its commit and the start, or Temporal was away then. A loop in the worker
    process rather than a Temporal schedule: a look every few seconds costs no workflow
    history or billed action, needs nothing created on the server, and runs wherever the
    logouts are delivered. Several workers may sweep at once: a start is idempotent."""

    def __init__(self, client: Client, settings: Settings, sessions: SessionFactory) -> None:
        self._client = client
        self._task_queue = settings.task_queue
        self._sessions = sessions

    async def sweep(self) -> int:
        """One look: how many logouts it started."""
        async with self._sessions() as db:
            return await logout_outbox.start_owed(db, await logout_outbox.left_behind(db), self._start)

    async def _start(self, logout: SessionLogoutInput) -> None:
        await self._client.start_workflow(
            SessionLogoutWorkflow.run, logout, **logout_start_options(logout, self._task_queue)
        )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception:  # the database or Temporal is away: the next look retries
                logger.warning("logout outbox sweep failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), logout_outbox.SWEEP_EVERY)


def metrics_runtime(address: str) -> Runtime | None:
    """A Temporal runtime serving the worker's metrics (Temporal's and ours) for Prometheus
    at http://<address>/metrics; None when the address is empty."""
    if not address:
        return None
    try:
        return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))
    except ValueError as exc:
        raise InsecureSettingsError(
            f"the worker cannot serve metrics on SSO_WORKER_METRICS_ADDRESS={address} ({exc}); "
            "give it a free host:port, or an empty value to turn worker metrics off"
        ) from None


async def run(settings: Settings) -> None:
    client = await connect(settings, runtime=metrics_runtime(settings.worker_metrics_address), role="worker")
    engine = create_engine(settings.async_database_url)
    worker = build_worker(client, settings, engine)
    await apply_mfa_policy(client, settings, engine)
    await start_housekeeping_at_worker_start(client, settings)
    sweeper = LogoutSweeper(client, settings, session_factory(engine))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with worker:
            await sweeper.run(stop)
    finally:
        await engine.dispose()


async def apply_policy(client: Client, settings: Settings, sessions: SessionFactory) -> bool:
    """When SSO_MFA_POLICY is `required` and the last policy applied was not (or none was
    recorded), start the rollout; then remember the policy. An organisation whose own policy
    is `required` without a rollout recorded (Temporal was away when it changed) gets its
    own. True when a rollout was started."""
    started = False
    async with sessions() as session:
        if await last_applied_policy(session) != settings.mfa_policy.value:
            started = settings.mfa_policy is MfaPolicy.required
            if started:
                await start_rollout(client, settings)
            await remember_policy(session, settings.mfa_policy)
            await session.commit()
        for org_id in await org_policies_to_apply(session):
            await start_rollout(client, settings, org_id)
            await remember_org_policy(session, org_id)
            await session.commit()
            started = True
        await session.commit()
    return started


async def apply_mfa_policy(client: Client, settings: Settings, engine: AsyncEngine) -> None:
    """A change of SSO_MFA_POLICY to `required` starts the rollout here, at worker start (see
    docs/flows.md); a failure is logged and the next worker start tries again."""
    try:
        if await apply_policy(client, settings, session_factory(engine)):
            logger.info("MFA policy now required (SSO_MFA_POLICY or an organisation's): a rollout started")
    except (RPCError, SQLAlchemyError, OSError) as exc:
        logger.warning(
            "could not apply SSO_MFA_POLICY (%s); the next worker start tries again", type(exc).__name__
        )


async def start_housekeeping(client: Client, settings: Settings) -> str:
    """The deployment's daily housekeeping (workflows/housekeeping.py): one flow however many
    workers start (its id, and USE_EXISTING keeps the running one); its run id."""
    handle = await client.start_workflow(
        HousekeepingWorkflow.run,
        HousekeepingInput(),
        id=HOUSEKEEPING_WORKFLOW_ID,
        task_queue=settings.task_queue,
        task_timeout=WORKFLOW_TASK_TIMEOUT,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes([SearchAttributePair(SSO_STEP, "purging")]),
        static_summary="Daily housekeeping: delete rows kept past SSO_RETENTION_DAYS",
        static_details="Counts per table in the current details and the housekeeping.purged audit event",
    )
    return handle.result_run_id or ""


async def start_housekeeping_at_worker_start(client: Client, settings: Settings) -> None:
    """A failure is logged; the next worker start tries again (a running one is kept)."""
    try:
        await start_housekeeping(client, settings)
    except (RPCError, OSError) as exc:
        logger.warning(
            "could not start housekeeping (%s); the next worker start tries again", type(exc).__name__
        )


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level)
    asyncio.run(run(settings))
    exit_after_temporal()


if __name__ == "__main__":
    main()
