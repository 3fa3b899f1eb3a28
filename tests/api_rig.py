"""The HTTP API served on 127.0.0.1 with an admin and a user token: the fixture REST tests share.

Temporal is pointed at a closed port: these tests cover what the API does without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from service import create_app
from settings import Settings, TemporalSettings
from store.repo import Role, Store
from tests.fakes.server import free_port, serve


@dataclass
class Api:
    client: httpx.Client
    store: Store
    admin: dict[str, str]
    user: dict[str, str]


@pytest.fixture
def api(any_store: Store, any_db_url: str) -> Iterator[Api]:
    nowhere = TemporalSettings(address=f"127.0.0.1:{free_port()}")
    settings = Settings(_env_file=None, database_url=any_db_url, temporal=nowhere)
    with (
        serve(create_app(settings, store=any_store)) as server,
        httpx.Client(base_url=server.url, timeout=15) as client,
    ):
        yield Api(
            client,
            any_store,
            admin={"Authorization": f"Bearer {any_store.create_token(Role.admin)}"},
            user={"Authorization": f"Bearer {any_store.create_token(Role.user)}"},
        )
