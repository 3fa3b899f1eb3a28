"""Shared test fixtures: real Temporal servers (from PyPI packages), real databases.

Each test gets its own task queue, its own database and its own fake servers, so tests can
run in any order. The Temporal servers are shared per session because starting them is the
slow part; tests keep apart by task queue and by unique workflow ids.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
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
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
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


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database of each kind: SQLite always, PostgreSQL where CI provides it."""
    if request.param == "sqlite":
        url = _sqlite_url(tmp_path)
        upgrade(url)
        yield url
        return
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests skipped: NUDGE_TEST_POSTGRES_URL is not set (CI sets it)")
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


@pytest.fixture
def any_store(any_db_url: str) -> Iterator[Store]:
    the_store = Store.from_url(any_db_url)
    yield the_store
    the_store.close()
