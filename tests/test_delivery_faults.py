"""Kill the worker while sends are in flight on two channels: no customer gets a second message.

Twilio and WhatsApp take no idempotency key, so after a crash we cannot ask them whether the
message arrived. The outbox row left ``sending`` becomes ``unknown`` - reported, never resent.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from domain.channels import ChannelName
from domain.delivery import DeliverRequest
from store.db import upgrade
from store.repo import Store
from tests.fakes.graph import FakeGraph
from tests.fakes.server import serve
from tests.fakes.twilio import FakeTwilio
from tests.processes import WorkerProcess
from workflows.send_message import SendMessage

PHONE = "+15557654321"


async def test_worker_killed_mid_send_on_two_channels(
    dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> None:
    database_url = f"sqlite:///{tmp_path / 'nudge.db'}"
    upgrade(database_url)
    store = Store.from_url(database_url)
    # The customer wrote recently, so free-form WhatsApp is allowed.
    store.record_inbound("whatsapp", "wamid.in", PHONE, body="hi", received_at=datetime.now(UTC))
    graph, twilio = FakeGraph(), FakeTwilio()
    graph.hold.hold_next(60)
    twilio.hold.hold_next(60)
    with ExitStack() as stack:
        graph_url = stack.enter_context(serve(graph.app)).url
        twilio_url = stack.enter_context(serve(twilio.app)).url
        env = {
            "NUDGE_DATABASE_URL": database_url,
            "NUDGE_TEMPORAL__ADDRESS": dev_env.client.service_client.config.target_host,
            "NUDGE_TEMPORAL__TASK_QUEUE": task_queue,
            "NUDGE_TWILIO__ACCOUNT_SID": twilio.account_sid,
            "NUDGE_TWILIO__AUTH_TOKEN": twilio.auth_token,
            "NUDGE_TWILIO__SMS_FROM": "+15005550006",
            "NUDGE_TWILIO__BASE_URL": twilio_url,
            "NUDGE_WHATSAPP__TOKEN": graph.token,
            "NUDGE_WHATSAPP__PHONE_NUMBER_ID": graph.phone_number_id,
            "NUDGE_WHATSAPP__GRAPH_URL": graph_url,
            "NUDGE_POLICY__QUIET_HOURS_START": "00:00",
            "NUDGE_POLICY__QUIET_HOURS_END": "00:00",
            # The replacement's retry comes after the 10 s heartbeat timeout: by then the
            # killed attempt is past this grace, so the send is reported unknown at once.
            "NUDGE_DELIVERY__IN_FLIGHT_GRACE": "5s",
        }
        worker = WorkerProcess(env, tmp_path).start()
        replacement: WorkerProcess | None = None
        try:
            handles = []
            for channel in (ChannelName.sms, ChannelName.whatsapp):
                key = f"fault-{channel.value}-{task_queue}"
                request = DeliverRequest(
                    key, key, channel, PHONE, text=f"Your order via {channel.value}"
                )
                handles.append(
                    await dev_env.client.start_workflow(
                        SendMessage.run, request, id=key, task_queue=task_queue
                    )
                )
            for fake_event in (twilio.hold.accepted, graph.hold.accepted):
                assert await asyncio.to_thread(fake_event.wait, 60), worker.output()
            worker.kill()  # both messages are at the providers; the activities never heard back
            replacement = WorkerProcess(env, tmp_path).start()
            results = [await asyncio.wait_for(h.result(), timeout=90) for h in handles]
        finally:
            worker.stop()
            if replacement is not None:
                replacement.stop()
    assert [r.status for r in results] == ["unknown", "unknown"], results
    assert len(twilio.messages) == 1, "exactly one SMS"
    assert len(graph.sent) == 1, "exactly one WhatsApp message"
    rows = {row.channel: row for row in store.list_outbox()}
    assert rows["sms"].status == "unknown" and rows["whatsapp"].status == "unknown"
    assert "in flight" in (rows["sms"].error or "")
    store.close()
