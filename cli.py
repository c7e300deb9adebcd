"""The `sso` command: run the stack, the worker or the web app; migrate; manage admin keys,
client apps and signing keys."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

from pydantic import ValidationError

from core.dev_ports import DevPort, check_ports
from core.devstack import (
    Processes,
    api_command,
    child_python_path,
    dev_entra_env,
    dev_metrics_env,
    entra_command,
    temporal_command,
    worker_command,
)
from core.settings import InsecureSettingsError, Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from temporalio.client import Client

    from api.client_schemas import ClientCreate, ClientCreated
    from api.schemas import StaffCreate
    from api.services.orgs import Orgs
    from core.dev_first_run import DevKey, TryIt
    from core.models import Staff


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (InsecureSettingsError, ValidationError) as exc:
        print(f"sso: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def run() -> NoReturn:
    """The `sso` command: main(), then an exit that skips the interpreter's teardown, which a
    Temporal client's native threads can crash (core.temporal_client.exit_after_temporal)."""
    from core.temporal_client import exit_after_temporal

    try:
        main()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            exit_after_temporal(exc.code or 0)
        print(exc.code, file=sys.stderr)
        exit_after_temporal(1)
    exit_after_temporal(0)


T = TypeVar("T")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sso", description="Staff Single Sign-On service")
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="run the whole product locally (Temporal, worker, web)")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--temporal-port", type=int, default=7233)
    dev.add_argument("--ui-port", type=int, default=8233)
    dev.add_argument(
        "--entra-port",
        type=int,
        default=9400,
        help="port of the local Microsoft Entra stand-in (when Entra is not set)",
    )
    dev.add_argument(
        "--worker-metrics-port",
        type=int,
        default=0,
        help="port of the worker's Prometheus metrics (default: any free port; "
        "the web app's /metrics includes them)",
    )
    dev.add_argument("--data-dir", default=os.environ.get("SSO_DATA_DIR", ".data"))
    dev.set_defaults(func=cmd_dev)

    worker = commands.add_parser("worker", help="run the Temporal worker")
    worker.set_defaults(func=cmd_worker)

    api = commands.add_parser("api", help="run the web app")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(func=cmd_api)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(func=cmd_migrate)

    keys = commands.add_parser("keys", help="generate deployment secrets")
    key_gen = keys.add_subparsers(dest="keys_command", required=True)
    generate = key_gen.add_parser("generate", help="print fresh secrets as .env lines")
    generate.set_defaults(func=cmd_keys_generate)

    staff = commands.add_parser("staff", help="manage staff members")
    staff_commands = staff.add_subparsers(dest="staff_command", required=True)
    staff_create = staff_commands.add_parser(
        "create", help="create a staff member and send their Single Sign-On email"
    )
    staff_create.add_argument("--first-name", required=True)
    staff_create.add_argument("--last-name", required=True)
    staff_create.add_argument("--email", required=True, help="their External Email 1")
    staff_create.add_argument(
        "--admin", action="store_true", help="give them the admin role (their setup requires MFA)"
    )
    staff_create.add_argument(
        "--no-email", action="store_true", help="create the record only; send the email later"
    )
    staff_create.add_argument(
        "--org", help="their organisation's slug (may be left out while there is only one)"
    )
    staff_create.add_argument(
        "--operator",
        action="store_true",
        help="an agentOS operator: an admin who acts across organisations (implies --admin)",
    )
    staff_create.set_defaults(func=cmd_staff_create)
    send_email = staff_commands.add_parser(
        "send-email", help="send the Single Sign-On email to an existing staff member"
    )
    send_email.add_argument("person", help="their External Email 1, or their staff id")
    send_email.set_defaults(func=cmd_staff_send_email)

    admin_key = commands.add_parser("admin-key", help="manage admin API keys")
    key_commands = admin_key.add_subparsers(dest="key_command", required=True)
    create = key_commands.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--org", help="the organisation's slug: a key for its admin only (default: an operator key)"
    )
    create.set_defaults(func=cmd_admin_key_create)

    orgs = commands.add_parser("orgs", help="manage the organisations (agencies) on the deployment")
    org_commands = orgs.add_subparsers(dest="orgs_command", required=True)
    org_create = org_commands.add_parser("create", help="add an organisation")
    org_create.add_argument("--name", required=True)
    org_create.add_argument("--slug", required=True, help="2-63 lowercase letters, digits, hyphens")
    org_create.add_argument(
        "--tenant",
        action="append",
        default=[],
        help="a Microsoft Entra tenant id it owns; repeat for several",
    )
    org_create.add_argument(
        "--mfa-policy", choices=["optional", "required"], help="default: the deployment's SSO_MFA_POLICY"
    )
    org_create.add_argument("--sender-name", help='e.g. "Harbour Lettings via agentOS"')
    org_create.set_defaults(func=cmd_orgs_create)
    org_list = org_commands.add_parser("list", help="list the organisations")
    org_list.set_defaults(func=cmd_orgs_list)

    clients = commands.add_parser("clients", help="manage the apps that sign people in (OpenID Connect)")
    client_commands = clients.add_subparsers(dest="clients_command", required=True)
    client_create = client_commands.add_parser("create", help="register an app and print its secret once")
    client_create.add_argument("--name", required=True)
    client_create.add_argument(
        "--redirect-uri", action="append", required=True, help="matched exactly; repeat for several"
    )
    client_create.add_argument(
        "--auth-method",
        default="client_secret_basic",
        choices=["client_secret_basic", "client_secret_post", "none"],
        help="none: a public client (a browser or native app), which must use PKCE",
    )
    client_create.add_argument("--id-token-alg", default="RS256", choices=["RS256", "ES256"])
    client_create.set_defaults(func=cmd_clients_create)

    signing_keys = commands.add_parser("signing-keys", help="manage the token signing keys")
    signing_commands = signing_keys.add_subparsers(dest="signing_command", required=True)
    rotate = signing_commands.add_parser(
        "rotate",
        help="publish new keys now; they sign after SSO_OIDC_KEY_PUBLISH_LEAD and the old ones retire",
    )
    rotate.set_defaults(func=cmd_signing_keys_rotate)

    audit = commands.add_parser("audit", help="check the records")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    boundary = audit_commands.add_parser(
        "boundary", help="every Entra link, and every flow change no web request stands behind"
    )
    boundary.set_defaults(func=cmd_audit_boundary)
    return parser


def cmd_worker(_args: argparse.Namespace) -> None:
    import worker

    worker.main()


def cmd_api(args: argparse.Namespace) -> None:
    import uvicorn

    from core.logging import configure

    settings = get_settings()
    configure(settings.log_level)
    # proxy_headers off: uvicorn would believe any X-Forwarded-For from loopback. The app
    # decides who a request is from (api/client_address.py, SSO_TRUSTED_PROXIES).
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_config=None,
        proxy_headers=False,
        server_header=False,
    )


def cmd_migrate(_args: argparse.Namespace) -> None:
    from core.migrate import upgrade

    upgrade(get_settings())
    print("sso: database is up to date")


def cmd_keys_generate(_args: argparse.Namespace) -> None:
    import base64
    import secrets

    from core.sealing import new_keypair

    private, public = new_keypair()
    print(f"SSO_SECRET_KEY={secrets.token_urlsafe(48)}")
    print(f"SSO_ENCRYPTION_KEYS={base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}")
    print(f"SSO_SEAL_PUBLIC_KEY={public}")
    print("# The private seal key belongs to workers only, never to the web app.")
    print(f"SSO_SEAL_PRIVATE_KEY={private}")


def cmd_admin_key_create(args: argparse.Namespace) -> None:
    key = asyncio.run(_create_admin_key(get_settings(), args.name, args.org))
    scope = f" for the organisation {args.org}" if args.org else " (operator: every organisation)"
    print(f"Admin API key '{args.name}'{scope} (shown once, store it now):\n{key}")


def cmd_orgs_create(args: argparse.Namespace) -> None:
    from api.org_schemas import OrgCreate

    try:
        data = OrgCreate(
            name=args.name,
            slug=args.slug,
            entra_tenant_ids=args.tenant,
            mfa_policy=args.mfa_policy,
            sender_name=args.sender_name,
        )
    except ValidationError as exc:
        raise _refused(exc) from None
    created = asyncio.run(_orgs(get_settings(), lambda orgs: orgs.create(data)))
    print(f"Created the organisation {created.slug} ({created.name}): {created.id}")


def cmd_orgs_list(_args: argparse.Namespace) -> None:
    for org in asyncio.run(_orgs(get_settings(), lambda orgs: orgs.all())):
        tenants = ", ".join(org.entra_tenant_ids) or "no Entra tenant"
        print(f"{org.slug}\t{org.name}\t{org.status}\t{tenants}\t{org.id}")


async def _orgs(settings: Settings, act: Callable[[Orgs], Awaitable[T]]) -> T:
    """The organisations service, acting as the operator at this terminal."""
    import getpass

    from api.services.orgs import Orgs
    from core.db import create_engine, session_factory
    from core.errors import SsoError
    from core.orgs import operator

    engine = create_engine(settings.async_database_url)
    try:
        async with session_factory(engine)() as session:
            try:
                result = await act(Orgs(session, settings, operator(f"cli:{getpass.getuser()}"), None))
                await session.commit()
            except SsoError as exc:
                raise SystemExit(f"sso: {exc.message}") from None
            return result
    finally:
        await engine.dispose()


def _refused(exc: ValidationError) -> SystemExit:
    """The first field a command's input was refused for, and why."""
    first = exc.errors()[0]
    return SystemExit(f"sso: {first['loc'][0]}: {first['msg']}")


def cmd_clients_create(args: argparse.Namespace) -> None:
    from api.client_schemas import ClientCreate
    from core.errors import SsoError

    try:
        data = ClientCreate(
            client_name=args.name,
            redirect_uris=args.redirect_uri,
            token_endpoint_auth_method=args.auth_method,
            id_token_signed_response_alg=args.id_token_alg,
        )
        created = asyncio.run(_create_client(get_settings(), data))
    except ValidationError as exc:
        raise _refused(exc) from None
    except SsoError as exc:
        raise SystemExit(f"sso: {exc.message}") from None
    print(f"client_id: {created.client_id}")
    if created.client_secret:
        print(f"client_secret (shown once, store it now): {created.client_secret}")
    print(f"discovery: {get_settings().public_url}/.well-known/openid-configuration")


async def _create_client(settings: Settings, data: ClientCreate) -> ClientCreated:
    from api.services.oidc_clients import Clients
    from core.db import create_engine, session_factory

    engine = create_engine(settings.async_database_url)
    try:
        async with session_factory(engine)() as session:
            created = await Clients(settings, session, actor="cli", ip=None).create(data)
            await session.commit()
    finally:
        await engine.dispose()
    return created


async def _register_demo_app(settings: Settings) -> None:
    """`sso dev`'s demo app (api/routes/dev_demo.py), registered or brought up to this
    start's address."""
    from api.routes import dev_demo
    from api.services.oidc_clients import Clients
    from core.db import create_engine, session_factory

    engine = create_engine(settings.async_database_url)
    try:
        async with session_factory(engine)() as session:
            await Clients(settings, session, actor="cli:sso dev", ip=None).ensure(
                dev_demo.CLIENT_ID, dev_demo.registration(settings)
            )
            await session.commit()
    finally:
        await engine.dispose()


def cmd_signing_keys_rotate(_args: argparse.Namespace) -> None:
    added = asyncio.run(_rotate_signing_keys(get_settings()))
    for kid, alg, signs_from in added:
        print(f"{alg} key {kid}: in the JWKS now, signs from {signs_from:%Y-%m-%d %H:%M:%S} UTC")


async def _rotate_signing_keys(settings: Settings) -> list[tuple[str, str, object]]:
    from core.db import create_engine, session_factory
    from core.models import utcnow
    from core.oidc.keys import KeyStore

    engine = create_engine(settings.async_database_url)
    try:
        async with session_factory(engine)() as session:
            rows = await KeyStore(settings).rotate(session, utcnow())
            await session.commit()
            return [(row.kid, row.alg, row.signs_from) for row in rows]
    finally:
        await engine.dispose()


def cmd_audit_boundary(_args: argparse.Namespace) -> None:
    found = asyncio.run(_audit_boundary(get_settings()))
    print("\n".join(found))


async def _audit_boundary(settings: Settings) -> list[str]:
    from core.boundary_audit import entra_links, unbacked_changes
    from core.codec import codec as make_codec
    from core.db import create_engine, session_factory

    engine = create_engine(settings.async_database_url)
    try:
        async with session_factory(engine)() as session:
            links = await entra_links(session)
    finally:
        await engine.dispose()
    lines = [f"Microsoft Entra links since install: {len(links)}"]
    lines += [
        f"  {link.at:%Y-%m-%d %H:%M:%S} staff {link.staff_id} tenant {link.tenant_id} "
        f"oid {link.object_id} via {link.via} by {link.actor} from {link.ip or '-'}"
        + ("" if link.still_linked else " (no longer linked)")
        for link in links
    ]
    client = await _temporal_or_exit(settings)
    codec = make_codec(settings)
    changes = [change async for change in unbacked_changes(client, codec)]
    lines.append(f"Flow changes with no web request behind them (retained histories): {len(changes)}")
    lines += [
        f"  {change.at:%Y-%m-%d %H:%M:%S} {change.workflow_id} {change.what}: "
        f"{change.why}; client {change.identity or '-'}"
        if change.at
        else f"  {change.workflow_id} {change.what}: {change.why}"
        for change in changes
    ]
    return lines


async def _create_admin_key(settings: Settings, name: str, org_slug: str | None = None) -> str:
    from core.admin_keys import create_admin_key
    from core.db import create_engine, session_factory
    from core.errors import SsoError
    from core.orgs import org_by_slug

    engine = create_engine(settings.async_database_url)
    try:
        async with session_factory(engine)() as session:
            try:
                org_id = (await org_by_slug(session, org_slug)).id if org_slug else None
            except SsoError as exc:
                raise SystemExit(f"sso: {exc.message}") from None
            key = await create_admin_key(session, settings, name, org_id)
            await session.commit()
    finally:
        await engine.dispose()
    return key


def cmd_staff_create(args: argparse.Namespace) -> None:
    """Bootstraps the first admin: the record, then the same "Send Single Sign-On Email" an
    admin would press."""
    from api.schemas import StaffCreate

    try:
        data = StaffCreate(
            first_name=args.first_name,
            last_name=args.last_name,
            external_email_1=args.email,
            is_admin=args.admin or args.operator,
        )
    except ValidationError as exc:
        raise _refused(exc) from None
    print(
        asyncio.run(
            _create_staff(
                get_settings(), data, send=not args.no_email, org=args.org, is_operator=args.operator
            )
        )
    )


def temporal_unreachable(settings: Settings) -> str:
    return (
        f"sso: could not reach Temporal at {settings.temporal_address}, so nothing was changed. "
        "Set SSO_TEMPORAL_ADDRESS to where Temporal listens (`sso dev --temporal-port N`, or "
        "`make dev TEMPORAL_PORT=N`, runs it at 127.0.0.1:N)."
    )


async def _temporal_or_exit(settings: Settings) -> Client:
    """A connected client, or the command ends naming the address it tried and the setting
    that moves it (a refused connection is not "try again in a minute")."""
    from core.temporal_client import connect

    try:
        async with asyncio.timeout(10):
            return await connect(settings, role="cli")
    except (RuntimeError, OSError, TimeoutError):
        raise SystemExit(temporal_unreachable(settings)) from None


async def _send_sso_email(settings: Settings, session: AsyncSession, client: Client, staff: Staff) -> str:
    """The admin's Send Single Sign-On Email, by the person at this terminal."""
    import getpass

    from api.services.setup_admin import Onboarding
    from core.db import UnitOfWork
    from core.errors import SsoError
    from core.orgs import operator
    from core.temporal_client import TemporalGateway

    onboarding = Onboarding(
        settings=settings,
        session=session,
        temporal=TemporalGateway(settings, client=client, role="cli"),
        uow=UnitOfWork(session),
    )
    try:
        await onboarding.send_email(staff.id, operator(f"cli:{getpass.getuser()}"), None)
    except SsoError as exc:
        raise SystemExit(f"sso: the Single Sign-On email was not sent: {exc.message}") from None
    return (
        f"Single Sign-On email sent to {staff.external_email_1}; the link "
        f"is valid for {int(settings.setup_link_ttl.total_seconds() // 60)} minutes."
    )


async def _create_staff(
    settings: Settings, data: StaffCreate, send: bool, org: str | None = None, is_operator: bool = False
) -> str:
    import getpass

    from api.services.staff import create_staff, creation_org
    from core.db import create_engine, session_factory
    from core.errors import SsoError
    from core.orgs import operator, org_by_slug

    # Temporal first: a person created without their email because Temporal is away would
    # make the same command refuse the next time.
    client = await _temporal_or_exit(settings) if send else None
    engine = create_engine(settings.async_database_url)
    try:
        async with session_factory(engine)() as session:
            try:
                scope = operator(f"cli:{getpass.getuser()}")
                org_id = (
                    (await org_by_slug(session, org)).id if org else await creation_org(session, scope, None)
                )
                staff = await create_staff(session, data, scope, None, org_id)
                staff.is_operator = is_operator
                await session.commit()
            except SsoError as exc:
                raise SystemExit(f"sso: {exc.message}") from None
            role = " (operator)" if staff.is_operator else " (admin)" if staff.is_admin else ""
            done = f"Created {staff.first_name} {staff.last_name}{role}: {staff.id}"
            if client is None:
                return done
            print(done, flush=True)
            return await _send_sso_email(settings, session, client, staff)
    finally:
        await engine.dispose()


def cmd_staff_send_email(args: argparse.Namespace) -> None:
    """Send Single Sign-On Email for someone who is already a staff member."""
    print(asyncio.run(_send_to_existing(get_settings(), args.person)))


async def _send_to_existing(settings: Settings, person: str) -> str:
    import uuid

    from sqlalchemy import select

    from core.db import create_engine, session_factory
    from core.models import Staff

    try:
        where = Staff.id == uuid.UUID(person)
    except ValueError:
        where = Staff.external_email_1 == person.strip().lower()
    client = await _temporal_or_exit(settings)
    engine = create_engine(settings.async_database_url)
    try:
        async with session_factory(engine)() as session:
            staff = await session.scalar(select(Staff).where(where))
            if staff is None:
                raise SystemExit(f"sso: no staff member has the External Email 1 or id {person!r}")
            return await _send_sso_email(settings, session, client, staff)
    finally:
        await engine.dispose()


def dev_ports(args: argparse.Namespace, entra_stand_in: bool, metrics_port: int) -> list[DevPort]:
    """Every port `sso dev` will listen on, with the option that moves each."""
    ports = [
        DevPort(args.port, "the web app", "--port", "PORT", host=args.host),
        DevPort(args.temporal_port, "Temporal's frontend", "--temporal-port", "TEMPORAL_PORT"),
        DevPort(args.ui_port, "the Temporal UI", "--ui-port", "UI_PORT"),
    ]
    if entra_stand_in:
        ports.append(DevPort(args.entra_port, "the Microsoft Entra stand-in", "--entra-port", "ENTRA_PORT"))
    if metrics_port:
        ports.append(
            DevPort(metrics_port, "the worker's metrics", "--worker-metrics-port", "WORKER_METRICS_PORT")
        )
    return ports


def _metrics_port(address: str) -> int:
    port = address.rpartition(":")[2]
    return int(port) if port.isdigit() else 0


def cmd_dev(args: argparse.Namespace) -> None:
    data_dir = Path(args.data_dir).expanduser().resolve()
    public = f"http://localhost:{args.port}"
    ui_origins = [f"http://localhost:{args.ui_port}", f"http://127.0.0.1:{args.ui_port}"]
    env = dict(os.environ)
    env.setdefault("SSO_ENV", "development")
    env.update(
        {
            "SSO_DATA_DIR": str(data_dir),
            "SSO_TEMPORAL_ADDRESS": f"127.0.0.1:{args.temporal_port}",
            "SSO_CODEC_DEV_OPEN": "true",
            "SSO_CODEC_CORS_ORIGINS": ",".join(
                [o for o in env.get("SSO_CODEC_CORS_ORIGINS", "").split(",") if o] + ui_origins
            ),
        }
    )
    env.setdefault("SSO_PUBLIC_URL", public)
    env.update(dev_metrics_env(env, args.worker_metrics_port))
    env["PYTHONPATH"] = child_python_path(env.get("PYTHONPATH"))
    entra_stand_in = not env.get("SSO_ENTRA_CLIENT_ID")
    # Before anything starts or is written: a taken port is named with the option that moves it.
    taken = check_ports(dev_ports(args, entra_stand_in, _metrics_port(env["SSO_WORKER_METRICS_ADDRESS"])))
    if taken:
        raise SystemExit("\n".join(taken))
    if entra_stand_in:
        env.update(dev_entra_env(env["SSO_PUBLIC_URL"], args.entra_port))
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    get_settings.cache_clear()
    settings = get_settings()
    if not settings.is_development:
        raise SystemExit("sso dev runs only with SSO_ENV=development")

    from core.dev_first_run import dev_admin_key, try_it
    from core.migrate import upgrade

    upgrade(settings)
    key = asyncio.run(dev_admin_key(settings, data_dir))
    asyncio.run(_register_demo_app(settings))
    person = asyncio.run(try_it(settings))

    processes = Processes(env)
    # Ctrl-C and SIGTERM both stop everything; SIGINT may arrive ignored from a parent shell.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        processes.start(
            "Temporal's dev server",
            temporal_command(
                data_dir,
                args.temporal_port,
                settings.temporal_namespace,
                ui_port=args.ui_port,
                codec_endpoint=f"{public}/codec",
            ),
            log_path=data_dir / "temporal.log",
            ready_port=("127.0.0.1", args.temporal_port),
        )
        if entra_stand_in:
            processes.start(
                "the Microsoft Entra stand-in",
                entra_command(args.entra_port),
                log_path=data_dir / "entra-dev.log",
                ready_port=("127.0.0.1", args.entra_port),
                ready_timeout=30,
            )
        processes.start("the worker", worker_command())
        processes.start("the web app", api_command(args.host, args.port), ready_port=(args.host, args.port))
        print(_banner(settings, args, key, person, data_dir), flush=True)
        while (stopped := processes.first_stopped()) is None:
            time.sleep(0.5)
        print(f"{stopped.ended()}\nsso dev: stopping the rest", file=sys.stderr)
        raise SystemExit(1)
    except KeyboardInterrupt:
        print("\nsso dev: stopping", file=sys.stderr)
    finally:
        # A second Ctrl-C would cut the shutdown short and leave Temporal and the stand-in
        # running; stop_all is bounded anyway (SIGKILL after its timeout).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        processes.stop_all()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _entra_line(settings: Settings) -> str:
    if settings.entra_dev_graph:
        where = settings.entra_discovery_url.split("/.well-known")[0]
        return (
            f"  Microsoft-Entra        local stand-in at {where}"
            " (test users: jo.bloggs, sam.disabled, olly.othertenant)"
        )
    if settings.entra_enabled:
        return f"  Microsoft-Entra        {settings.entra_discovery_url}"
    return "  Microsoft-Entra        off (set SSO_ENTRA_CLIENT_ID and SSO_ENTRA_CLIENT_SECRET)"


def _worker_metrics_note(settings: Settings) -> str:
    if not settings.worker_metrics_address:
        return "   (worker metrics off)"
    return f"   (with the worker's, served at {settings.worker_metrics_address})"


def _try_it(settings: Settings, key: str, person: TryIt) -> str:
    api = f"{settings.public_url}/api/v1/staff"
    auth = f"-H 'Authorization: Bearer {key}'"
    mailbox = f"then open {settings.public_url}/dev/mailbox and click Set Up Single Sign-On."
    if person.staff_id is not None:
        return f"""Try it: Jo Bloggs ({person.email}) is here from an earlier run; send their Single
Sign-On email again, {mailbox}
  curl -s -X POST {api}/{person.staff_id}/sso-email {auth}"""
    body = json.dumps(
        {"first_name": "Jo", "last_name": "Bloggs", "external_email_1": person.email},
        separators=(",", ":"),
    )
    return f"""Try it: create Jo Bloggs, send their Single Sign-On email with the id the first answer
gives, {mailbox}
  curl -s -X POST {api} {auth} \\
       -H 'Content-Type: application/json' -d '{body}'
  curl -s -X POST {api}/<id>/sso-email {auth}"""


def _banner(settings: Settings, args: argparse.Namespace, key: DevKey, person: TryIt, data_dir: Path) -> str:
    from api.routes.dev_demo import url as demo_url

    return f"""
{settings.brand_name} Single Sign-On is running (development)
  Web app and admin API  {settings.public_url}   (OpenAPI: {settings.public_url}/docs)
  Development mailbox    {settings.public_url}/dev/mailbox   (email backend: {settings.email_backend.value})
  Demo app               {demo_url(settings)}   (single sign-on to an app, end to end)
  Temporal UI            http://localhost:{args.ui_port}
  Metrics (Prometheus)   {settings.public_url}/metrics{_worker_metrics_note(settings)}
{_entra_line(settings)}
  Temporal frontend      127.0.0.1:{args.temporal_port}
  Data directory         {data_dir}

Development admin API key ({key.note}):
  {key.key}

{_try_it(settings, key.key, person)}

Press Ctrl-C to stop everything.
"""


if __name__ == "__main__":
    run()
