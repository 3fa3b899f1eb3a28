"""Kill the worker as a paid follow-up settles its credits: one message, one capture.

The worker process dies (``os._exit``) just before the settlement is written (the message
is sent and marked in the outbox, nothing captured yet) or just after it is committed (the
workflow never heard of it). A real ``nudge worker`` takes the run over: it finds the
message sent and does not send it again, and finds the settlement written, or writes it,
once.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from domain.credits import EntryKind
from domain.scheduled_followups import ScheduleStatus
from domain.templates import MessageTemplate
from followup_schedules import FollowupScheduler, ScheduleRequest
from store.db import upgrade
from store.events import NewLead
from store.repo import Store
from tests.crashing_worker import CRASHED
from tests.fakes.server import serve
from tests.fakes.twilio import FakeTwilio
from tests.processes import SECRET_KEY, WorkerProcess
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def twilio() -> Iterator[tuple[FakeTwilio, str]]:
    fake = FakeTwilio()
    with serve(fake.app) as server:
        yield fake, server.url


@pytest.mark.parametrize("when", ["before", "after"])
async def test_worker_killed_while_settling_leaves_one_message_and_one_capture(
    when: str,
    dev_env: WorkflowEnvironment,
    tmp_path: Path,
    task_queue: str,
    twilio: tuple[FakeTwilio, str],
) -> None:
    fake, twilio_url = twilio
    database_url = f"sqlite:///{tmp_path / 'nudge.db'}"
    upgrade(database_url)
    store = Store.from_url(database_url)
    contact = store.create_lead(NewLead(name="Ravi", phone="+15551230077")).id
    store.add_credits(contact, EntryKind.grant, 10, reason="bought", key="g")
    store.create_template(
        MessageTemplate.model_validate(
            {
                "name": "checkin",
                "channel": "sms",
                "variants": {"en": "Hi {{user_name}}"},
                "variables": ["user_name"],
            }
        )
    )
    env = {
        "NUDGE_SECRET_KEY": SECRET_KEY,
        "NUDGE_DATABASE_URL": database_url,
        "NUDGE_TEMPORAL__ADDRESS": dev_env.client.service_client.config.target_host,
        "NUDGE_TEMPORAL__TASK_QUEUE": task_queue,
        "NUDGE_TWILIO__ACCOUNT_SID": fake.account_sid,
        "NUDGE_TWILIO__AUTH_TOKEN": fake.auth_token,
        "NUDGE_TWILIO__SMS_FROM": "+15005550006",
        "NUDGE_TWILIO__BASE_URL": twilio_url,
        "NUDGE_POLICY__QUIET_HOURS_START": "00:00",
        "NUDGE_POLICY__QUIET_HOURS_END": "00:00",
    }
    crashing = _crashing_worker(when, env, tmp_path)
    replacement: WorkerProcess | None = None
    try:

        async def client() -> Any:
            return dev_env.client

        scheduler = FollowupScheduler(store, client, task_queue)
        view, _ = await scheduler.schedule(
            ScheduleRequest(contact_id=contact, template="checkin", scheduled_at=datetime.now(UTC))
        )
        status = await asyncio.to_thread(crashing.wait, 60)
        assert status == CRASHED, (tmp_path / "crashing.log").read_text()
        assert len(fake.messages) == 1, "the message reached Twilio before the crash"
        replacement = WorkerProcess(env, tmp_path).start()

        def settled() -> bool:
            found = store.get_schedule(view.id)
            return found is not None and found.status == ScheduleStatus.sent

        await wait_for(settled, within=90, failure="the replacement never settled the run")
    finally:
        if crashing.poll() is None:
            crashing.kill()
        if replacement is not None:
            replacement.stop()
    assert len(fake.messages) == 1, "sent once"
    kinds = sorted(entry.kind.value for entry in store.credit_entries(contact))
    assert kinds == ["capture", "grant", "reserve"], "captured once"
    balance = store.credit_balance(contact)
    assert (balance.balance, balance.reserved, balance.spent) == (5, 0, 5)
    store.close()


def _crashing_worker(when: str, env: dict[str, str], tmp_path: Path) -> subprocess.Popen[bytes]:
    import os

    with (tmp_path / "crashing.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.crashing_worker", when],
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
