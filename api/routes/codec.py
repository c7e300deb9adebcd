"""Codec endpoint for the Temporal UI: decodes payloads for authorised operators only."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from api.cookies import SIGNIN_SESSION, read_cookie
from api.deps import SettingsDep, UnitOfWorkDep, bearer, refuse
from api.services.sessions import Sessions
from core.admin_keys import key_scope
from core.codec import REASON, is_unauthenticated, refusal
from core.codec import codec as make_codec
from core.errors import SsoError
from core.orgs import staff_scope

router = APIRouter(prefix="/codec", tags=["ops"])


async def _authorise(request: Request, uow: UnitOfWorkDep, settings: SettingsDep) -> None:
    """An operator's admin API key, or an operator signed in with a second factor: the
    Temporal UI sends the sign-in cookie along when it is configured to include credentials.
    Payloads are every organisation's, so an organisation's admin gets a 403."""
    if settings.codec_dev_open and settings.is_development:
        return
    if bearer(request):
        scope = await key_scope(uow.session, settings, bearer(request))
        if scope is None:
            refuse(request, "The codec endpoint needs an admin API key")
        await uow.commit_now()  # the key's last use is kept whatever the answer
        scope.require_operator()
        return
    current = await Sessions(settings, uow.session).signed_in(read_cookie(request, settings, SIGNIN_SESSION))
    if current is None or current.staff is None or not current.staff.is_admin or not current.strong:
        refuse(request, "The codec endpoint needs an admin API key or an administrator signed in with MFA")
    (await staff_scope(uow.session, current.staff, "codec")).require_operator()


async def _apply(request: Request, settings: SettingsDep, encode: bool) -> Response:
    try:
        payloads = json_format.Parse(await request.body(), Payloads())
    except json_format.ParseError as exc:
        raise SsoError("Body must be a JSON Payloads message") from exc
    codec = make_codec(settings)
    if encode:
        result = await codec.encode(list(payloads.payloads))
    else:
        result = [_shown(p) for p in await codec.decode(list(payloads.payloads))]
    body = json_format.MessageToJson(Payloads(payloads=result))
    return Response(body, media_type="application/json")


def _shown(payload: Payload) -> Payload:
    """What the UI shows for a payload the key did not authenticate: a plain statement, never
    its content, so ops see forged input for what it is."""
    if not is_unauthenticated(payload):
        return payload
    reason = payload.metadata.get(REASON, b"").decode(errors="replace")
    text = f"unauthenticated payload: {refusal(reason).removeprefix('Refused a payload ')}"
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(text).encode())


@router.post("/decode")
async def decode(request: Request, uow: UnitOfWorkDep, settings: SettingsDep) -> Response:
    await _authorise(request, uow, settings)
    return await _apply(request, settings, encode=False)


@router.post("/encode")
async def encode(request: Request, uow: UnitOfWorkDep, settings: SettingsDep) -> Response:
    await _authorise(request, uow, settings)
    return await _apply(request, settings, encode=True)
