"""Shared test fixtures: real Temporal servers (from PyPI packages), real databases.

Each test gets its own task queue, its own database and its own fake servers, so tests can
run in any order. The Temporal servers are shared per session because starting them is the
slow part; tests keep apart by task queue and by unique workflow ids.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from store.db import upgrade
from store.repo import Store
from tests.fakes.server import free_port
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

BIN = Path(sys.executable).parent
POSTGRES_URL = os.environ.get("NUDGE_TEST_POSTGRES_URL", "")

pytest_plugins = ["tests.api_rig", "tests.menu_rig"]
"""The ``api`` fixture (the HTTP API with tokens) for every REST test, and the ``rig``
fixture (a menu conversation's worker and router) for the menu conversation tests."""


def temporal_cli() -> str:
    return str(BIN / "temporal")


def temporal_test_server() -> str:
    return str(BIN / "temporal-test-server")


async def _start_time_skipping() -> WorkflowEnvironment:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_test_server(),
        data_converter=pydantic_data_converter,
    )
    # The Java test server implements AddSearchAttributes (but not listing them).
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in SEARCH_ATTRIBUTES
            },
        )
    )
    return env


@pytest.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: a 24 h timer fires as soon as nothing else runs."""
    env = await _start_time_skipping()
    yield env
    await env.shutdown()


@pytest.fixture
async def fresh_time_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of the test's own, whose clock starts at the wall clock: for
    tests that compare workflow time with real timestamps (the WhatsApp window, the cap)."""
    env = await _start_time_skipping()
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal CLI dev server (the one `nudge dev` runs), with our search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
        ui=False,
        # Below the ephemeral range (no client socket can hold it first), and time to start
        # on a busy machine: the SDK's 5 s default was once too short here.
        port=free_port(),
        dev_server_startup_timeout=timedelta(seconds=30),
    )
    yield env
    await env.shutdown()


@pytest.fixture
async def dev_env(dev_server: WorkflowEnvironment) -> AsyncIterator[WorkflowEnvironment]:
    """The shared dev server, left with no running workflow by each test that used it.

    Workflow ids carry contact ids, and every test's fresh database numbers its contacts
    from 1: a conversation a test left running would receive the next test's messages.
    """
    yield dev_server
    client = dev_server.client
    async for execution in client.list_workflows("ExecutionStatus = 'Running'"):
        with contextlib.suppress(RPCError):  # it ended meanwhile
            await client.get_workflow_handle(execution.id, run_id=execution.run_id).terminate(
                reason="the test that started it has ended"
            )


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:12]}"


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'nudge.db'}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = _sqlite_url(tmp_path)
    upgrade(url)
    return url


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    the_store = Store.from_url(sqlite_url)
    yield the_store
    the_store.close()


@contextmanager
def _fresh_database(kind: str, directory: Path) -> Iterator[str]:
    """A new, migrated database of the kind asked for, dropped afterwards (PostgreSQL)."""
    if kind == "sqlite":
        url = _sqlite_url(directory)
        upgrade(url)
        yield url
        return
    name = f"nudge_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database of each kind: SQLite always, PostgreSQL where CI provides it."""
    if request.param == "postgresql" and not POSTGRES_URL:
        pytest.skip("PostgreSQL tests skipped: NUDGE_TEST_POSTGRES_URL is not set (CI sets it)")
    with _fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database, for what only PostgreSQL enforces."""
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests skipped: NUDGE_TEST_POSTGRES_URL is not set (CI sets it)")
    with _fresh_database("postgresql", tmp_path) as url:
        yield url


@pytest.fixture(scope="module")
def module_db_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One database for a whole module: PostgreSQL where CI provides it (its column lengths
    and types are the stricter), else SQLite."""
    kind = "postgresql" if POSTGRES_URL else "sqlite"
    with _fresh_database(kind, tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture
def any_store(any_db_url: str) -> Iterator[Store]:
    the_store = Store.from_url(any_db_url)
    yield the_store
    the_store.close()
