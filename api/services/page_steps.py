"""What the services behind the sign-on pages' flows (setup, reset) share."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from api.services.flows import FlowClient
from core.settings import Settings
from core.temporal_client import TemporalGateway


@dataclass
class PageSteps:
    """A page flow's steps: the request's database session, and flows stepped within the page
    step's timeout (a person is waiting for the page)."""

    settings: Settings
    db: AsyncSession
    temporal: TemporalGateway

    @property
    def _secret(self) -> str:
        return self.settings.secret_key.get_secret_value()

    @property
    def _timeout(self) -> float:
        return self.settings.step_timeout.total_seconds()

    @property
    def _flows(self) -> FlowClient:
        return FlowClient(self.temporal, self._timeout, self.settings.task_queue)
