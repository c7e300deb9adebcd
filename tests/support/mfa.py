"""What the MFA obligation tests share: the admin API's view of a person's obligation."""

from __future__ import annotations

from typing import Any

from tests.support.harness import Stack


async def obligation(stack: Stack, staff_id: str, step: str, **more: Any) -> dict[str, Any]:
    """The API's view of the obligation, once its flow has recorded `step` (and `more`)."""
    status = await stack.wait_for(
        staff_id,
        lambda s: (
            s["mfa_obligation"] is not None
            and s["mfa_obligation"]["step"] == step
            and all(s["mfa_obligation"][k] == v for k, v in more.items())
        ),
    )
    return status["mfa_obligation"]  # type: ignore[no-any-return]
