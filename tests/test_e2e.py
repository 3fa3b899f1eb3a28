"""End to end on the Temporal dev server: `nudge worker` as its own process, the HTTP service,
and fake Re:amaze and Gemini servers, all over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from service import create_app
from settings import Settings
from store.db import upgrade
from store.repo import Role, Store
from tests.conftest import temporal_cli
from tests.fakes.server import serve
from tests.processes import WorkerProcess
from tests.stack import Fakes, running_fakes
from tests.waiting import eventually, first_result, wait_for
from workflows.helpdesk_poll import schedule_id_for
from workflows.send_message import SendMessageResult

TAG = "Needs-Sales-Followup"


@dataclass
class Stack:
    env: WorkflowEnvironment
    fakes: Fakes
    store: Store
    api: httpx.AsyncClient
    task_queue: str
    worker_env: dict[str, str]
    workdir: Path

    def conversation(self, first: str = "Is the fiddle leaf fig in stock?") -> str:
        slug = f"e2e-{uuid.uuid4().hex[:8]}"
        self.fakes.reamaze.add_conversation(slug, tags=[TAG], customer_email=f"{slug}@example.com")
        self.fakes.reamaze.add_message(
            slug, first, email=f"{slug}@example.com", created_at=datetime(2026, 1, 1, tzinfo=UTC)
        )
        return slug

    async def outcome(self, slug: str, timeout: float = 60) -> dict[str, Any]:
        """The follow-up's outcome as the API lists it, once there is one."""

        async def listed() -> dict[str, Any] | None:
            response = await self.api.get("/v1/followups", params={"conversation": slug})
            response.raise_for_status()
            if rows := response.json():
                assert len(rows) == 1, rows
                return dict(rows[0])
            return None

        found = await first_result(listed, within=timeout, every=0.2)
        if found is None:
            raise AssertionError(f"no outcome for {slug} within {timeout}s")
        return found


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> AsyncIterator[Stack]:
    database_url = f"sqlite:///{tmp_path / 'nudge.db'}"
    upgrade(database_url)
    with running_fakes() as fakes:
        worker_env = {
            "NUDGE_DATABASE_URL": database_url,
            "NUDGE_TEMPORAL__ADDRESS": dev_env.client.service_client.config.target_host,
            "NUDGE_TEMPORAL__TASK_QUEUE": task_queue,
            "NUDGE_REAMAZE__BRAND": "shop",
            "NUDGE_REAMAZE__BASE_URL": fakes.reamaze_server.url,
            "NUDGE_REAMAZE__LOGIN_EMAIL": fakes.reamaze.login_email,
            "NUDGE_REAMAZE__API_TOKEN": fakes.reamaze.api_token,
            "NUDGE_REAMAZE__POLL_INTERVAL": "1s",
            "NUDGE_FOLLOWUP__WAITS": "1s,2s",
            "NUDGE_LLM__PROVIDER": "gemini",
            "NUDGE_GEMINI__API_KEY": fakes.gemini.api_key,
            "NUDGE_GEMINI__BASE_URL": fakes.gemini_server.url,
            # Follow-ups are marketing: no quiet hours at whatever hour the suite runs.
            "NUDGE_POLICY__QUIET_HOURS_START": "00:00",
            "NUDGE_POLICY__QUIET_HOURS_END": "00:00",
        }
        settings = Settings(_env_file=None, **_nested(worker_env))
        store = Store.from_url(database_url)
        token = store.create_token(Role.admin, "e2e")
        with serve(create_app(settings, store=store)) as api_server:
            async with httpx.AsyncClient(
                base_url=api_server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
            ) as api:
                yield Stack(dev_env, fakes, store, api, task_queue, worker_env, tmp_path)
        schedule = dev_env.client.get_schedule_handle(schedule_id_for("reamaze", task_queue))
        try:
            await schedule.delete()
        except Exception:  # the test may not have created it
            pass
        store.close()


def _nested(env: dict[str, str]) -> dict[str, Any]:
    """Settings(**...) from NUDGE_* names, so the API sees what the worker process sees."""
    out: dict[str, Any] = {}
    for name, value in env.items():
        parts = name.removeprefix("NUDGE_").lower().split("__")
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return out


async def test_sequences_end_to_end(stack: Stack) -> None:
    plain = stack.conversation()
    bought = stack.conversation("Payment successful - order confirmed")
    flaky = stack.conversation()
    stack.fakes.reamaze.fail_next("POST", f"/conversations/{flaky}/messages", 503, times=2)
    gone = stack.conversation()
    stack.fakes.reamaze.fail_next("GET", f"/conversations/{gone}", 404, times=1000)

    worker = WorkerProcess(stack.worker_env, stack.workdir).start()
    try:
        outcome = await stack.outcome(plain)
        assert outcome["status"] == "completed", outcome
        assert [s["step"] for s in outcome["steps"]] == [1, 2]
        assert all(s["sent_at"] for s in outcome["steps"])
        posts = stack.fakes.reamaze.posts_for(plain)
        assert len(posts) == 2
        assert all(p["message"]["suppress_autoresolve"] is True for p in posts)
        assert stack.fakes.reamaze.tags(plain) == []
        assert outcome["tag_removed"] is True

        assert (await stack.outcome(bought))["status"] == "purchase_detected"
        assert stack.fakes.reamaze.posts_for(bought) == []

        assert (await stack.outcome(flaky))["status"] == "completed"
        assert len(stack.fakes.reamaze.posts_for(flaky)) == 2, "retried sends post once each"

        assert (await stack.outcome(gone))["status"] == "conversation_gone"

        # A finished, untagged conversation is not started again by later polls.
        await asyncio.sleep(2.5)
        assert len(stack.fakes.reamaze.posts_for(plain)) == 2

        # The runs are findable by their search attributes (what the Web UI filters on).
        query = f"NudgeKind = 'helpdesk_followup' AND WorkflowId = 'followup:reamaze:{plain}'"
        found = [w async for w in stack.env.client.list_workflows(query)]
        assert found, "visibility should list the follow-up by NudgeKind"

        listed = await stack.api.get("/v1/followups", params={"status": "purchase_detected"})
        assert bought in {row["conversation"] for row in listed.json()}
        assert plain not in {row["conversation"] for row in listed.json()}
    finally:
        worker.stop()


async def test_cancel_from_the_api(stack: Stack) -> None:
    stack.worker_env["NUDGE_FOLLOWUP__WAITS"] = "1h,24h"
    stack.worker_env["NUDGE_REAMAZE__POLL_INTERVAL"] = "1h"
    worker = WorkerProcess(stack.worker_env, stack.workdir).start()
    try:
        slug = stack.conversation()
        started = await stack.api.post(
            "/v1/followups", json={"conversation": slug, "waits": ["1h"]}
        )
        assert started.status_code == 201, started.text
        workflow_id = started.json()["workflow_id"]
        again = await stack.api.post("/v1/followups", json={"conversation": slug})
        assert again.status_code == 409, "a second sequence for one conversation is refused"

        handle = stack.env.client.get_workflow_handle(workflow_id)

        async def waiting() -> bool:
            return bool(await handle.query("status") == "waiting_step_1")

        await eventually(waiting, within=10, every=0.1)

        anonymous = await stack.api.post(
            f"/v1/followups/{workflow_id}/cancel", headers={"Authorization": ""}
        )
        assert anonymous.status_code == 401
        cancelled = await stack.api.post(f"/v1/followups/{workflow_id}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        outcome = await stack.outcome(slug)
        assert outcome["status"] == "cancelled"
        assert outcome["tag_removed"] is True
        assert stack.fakes.reamaze.tags(slug) == []
        assert stack.fakes.reamaze.posts_for(slug) == []

        missing = await stack.api.post("/v1/followups/followup:reamaze:nope/cancel")
        assert missing.status_code == 404 and "workflow_id" in missing.json()["detail"]
        bad = await stack.api.post("/v1/followups", json={"conversation": "has spaces"})
        assert bad.status_code == 422 and "conversation" in bad.text
    finally:
        worker.stop()


async def test_worker_killed_after_the_provider_accepted_posts_once(stack: Stack) -> None:
    stack.worker_env["NUDGE_FOLLOWUP__WAITS"] = "1s"
    slug = stack.conversation()
    stack.fakes.reamaze.hold_post_response(60)
    worker = WorkerProcess(stack.worker_env, stack.workdir).start()
    replacement: WorkerProcess | None = None
    try:
        await asyncio.to_thread(stack.fakes.reamaze.post_accepted.wait, 60)
        assert len(stack.fakes.reamaze.posts_for(slug)) == 1
        worker.kill()  # the message is at Re:amaze; our activity never saw the answer
        replacement = WorkerProcess(stack.worker_env, stack.workdir).start()
        outcome = await stack.outcome(slug, timeout=90)
        assert outcome["status"] == "completed", outcome
        assert len(stack.fakes.reamaze.posts_for(slug)) == 1, "exactly one message was posted"
        rows = stack.store.list_outbox()
        assert [r.status for r in rows if r.recipient == slug] == ["sent"]
    finally:
        worker.stop()
        if replacement is not None:
            replacement.stop()


async def test_a_message_to_a_reamaze_conversation_is_posted_once(stack: Stack) -> None:
    """``POST /v1/messages`` with ``channel: reamaze`` takes the one send path to Re:amaze."""
    slug = f"e2e-{uuid.uuid4().hex[:8]}"
    stack.fakes.reamaze.add_conversation(slug, tags=[], customer_email=f"{slug}@example.com")
    worker = WorkerProcess(stack.worker_env, stack.workdir).start()
    try:
        body = {"channel": "reamaze", "to": slug, "text": "Your order ships today.", "key": slug}
        sent = await stack.api.post("/v1/messages", json=body)
        assert sent.status_code == 202, sent.text
        handle = stack.env.client.get_workflow_handle(
            sent.json()["workflow_id"], result_type=SendMessageResult
        )
        result = await handle.result()
        assert result.status == "sent", result
        again = await stack.api.post("/v1/messages", json=body)
        assert again.status_code in (202, 409), again.text
        if again.status_code == 202:
            await stack.env.client.get_workflow_handle(again.json()["workflow_id"]).result()

        posts = [post["message"] for post in stack.fakes.reamaze.posts_for(slug)]
        assert len(posts) == 1, "the same key never posts twice"
        assert posts[0]["body"] == "Your order ships today."
        assert posts[0]["origin_id"] == f"message:{slug}"
    finally:
        worker.stop()


async def test_a_reset_follow_up_posts_no_step_twice(stack: Stack) -> None:
    """``temporal workflow reset``, the operator's usual repair, runs a follow-up again from
    its start under a new run id: the step already posted is not posted again, because its
    key comes from the workflow, not from the run."""
    stack.worker_env["NUDGE_FOLLOWUP__WAITS"] = "1s,8s"
    slug = stack.conversation()
    workflow_id = f"followup:reamaze:{slug}"
    worker = WorkerProcess(stack.worker_env, stack.workdir).start()
    try:
        await wait_for(lambda: len(stack.fakes.reamaze.posts_for(slug)) == 1, within=60)
        first_run = (await stack.env.client.get_workflow_handle(workflow_id).describe()).run_id
        reset = await asyncio.to_thread(
            subprocess.run,
            [
                temporal_cli(), "workflow", "reset", "--workflow-id", workflow_id,
                "--type", "FirstWorkflowTask", "--reason", "repair after a bad deploy",
                "--address", stack.env.client.service_client.config.target_host,
                "--namespace", stack.env.client.namespace,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        assert reset.returncode == 0, reset.stderr

        outcome = await stack.outcome(slug, timeout=90)
        assert outcome["status"] == "completed", outcome
        assert outcome["run_id"] != first_run, "the outcome is the reset run's"
        assert len(stack.fakes.gemini.requests) == 3, "the reset run wrote step 1 again"
        origins = [post["message"]["origin_id"] for post in stack.fakes.reamaze.posts_for(slug)]
        assert len(origins) == 2 and len(set(origins)) == 2, origins
        rows = [r for r in stack.store.list_outbox() if r.recipient == slug]
        assert sorted(r.status for r in rows) == ["sent", "sent"]
    finally:
        worker.stop()
