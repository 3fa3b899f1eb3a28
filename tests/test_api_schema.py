"""Every operation in the OpenAPI document, fed valid and invalid input by schemathesis.

The app runs as it does in production: a real uvicorn server on 127.0.0.1, a real database
(PostgreSQL where CI provides it, whose column lengths are the stricter) and a real Temporal
dev server (no worker listens on the task queue, so started runs simply wait). Whatever the
input, the answer is never a 5xx, and a 4xx always says what was wrong.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from temporalio.testing import WorkflowEnvironment

from service import create_app
from settings import Settings, TemporalSettings
from store.repo import Role, Store
from tests.fakes.server import RunningServer, serve

OUTCOMES: Counter[str] = Counter()
"""Responses by status class, per run of this module: the figures in the closing report."""


class Stack:
    def __init__(self, server: RunningServer, admin: str) -> None:
        self.server = server
        self.headers = {"Authorization": f"Bearer {admin}"}


@pytest.fixture(scope="module")
def stack(module_db_url: str, dev_server: WorkflowEnvironment) -> Iterator[Stack]:
    temporal = TemporalSettings(
        address=dev_server.client.service_client.config.target_host,
        namespace=dev_server.client.namespace,
        task_queue=f"tq-schema-{uuid.uuid4().hex[:8]}",
    )
    settings_ = Settings(
        _env_file=None,
        database_url=module_db_url,
        temporal=temporal,
        secret_key="schemathesis-secret-key-of-32-characters",
    )
    store = Store.from_url(module_db_url)
    try:
        with serve(create_app(settings_, store=store)) as server:
            yield Stack(server, store.create_token(Role.admin, "schemathesis"))
    finally:
        store.close()
        total = sum(OUTCOMES.values())
        print(
            f"\nschemathesis: {total} requests: "
            + ", ".join(sorted(f"{k} {v}" for k, v in OUTCOMES.items()))
        )


def _document() -> dict[str, Any]:
    """The OpenAPI document as the app serves it (it depends on no setting or data)."""
    app = create_app(Settings(_env_file=None, database_url="sqlite://"))
    document = app.openapi()
    app.state.store.close()
    return document


schema = schemathesis.openapi.from_dict(_document()).exclude(
    # It runs the rule in a worker and waits for the answer; no worker listens here, so it
    # would answer 504 by design. tests/test_automation_e2e.py runs it against a worker.
    path="/v1/automations/{automation_id}/test",
    method="POST",
)


@schemathesis.check
def a_4xx_names_the_problem(ctx: Any, response: Any, case: Case[Any]) -> bool | None:
    """A refusal carries a body a person (or a program) can act on: JSON with ``detail``."""
    if 400 <= response.status_code < 500:
        try:
            body = response.json()
        except ValueError:
            body = None
        detail = body.get("detail") if isinstance(body, dict) else None
        assert detail, f"{response.status_code} without a reason: {response.text[:200]!r}"
    return None


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_operation_answers_5xx_and_every_4xx_names_the_problem(
    case: Case[Any], stack: Stack
) -> None:
    response = case.call(base_url=stack.server.url, headers=stack.headers, timeout=30)
    OUTCOMES[f"{response.status_code // 100}xx"] += 1
    case.validate_response(response, checks=[not_a_server_error, a_4xx_names_the_problem])
