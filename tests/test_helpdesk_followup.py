"""HelpdeskFollowUp and HelpdeskPoll on the time-skipping server: 30 min and 24 h in moments.

The activities are the real ones, talking HTTP to fake Re:amaze and Gemini servers and
writing to a real SQLite database.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment

from dependencies import get_temporal
from domain.channels import ChannelName
from domain.policy import OptOutSource
from domain.status import FollowUpStatus
from service import create_app
from settings import PolicySettings, Settings
from store.repo import FollowUpRecord, Role, Store
from tests.stack import Fakes, nudge_worker, running_fakes, settings_for, write_script_config
from tests.waiting import eventually, wait_for
from workflows.helpdesk_followup import (
    FollowUpInput,
    FollowUpResult,
    HelpdeskFollowUp,
    workflow_id_for,
)
from workflows.helpdesk_poll import HelpdeskPoll, PollInput, PollResult

TAG = "Needs-Sales-Followup"
WAITS = [timedelta(minutes=30), timedelta(hours=24)]


@dataclass
class Rig:
    env: WorkflowEnvironment
    fakes: Fakes
    store: Store
    task_queue: str

    def conversation(
        self, *, tags: list[str] | None = None, first: str = "Do you ship monsteras?"
    ) -> str:
        slug = f"conv-{uuid.uuid4().hex[:8]}"
        self.fakes.reamaze.add_conversation(slug, tags=[TAG, "vip"] if tags is None else tags)
        self.fakes.reamaze.add_message(
            slug, first, email="customer@example.com", created_at=datetime(2026, 1, 1, tzinfo=UTC)
        )
        return slug

    async def start(
        self, slug: str, waits: list[timedelta] = WAITS
    ) -> WorkflowHandle[HelpdeskFollowUp, FollowUpResult]:
        return await self.env.client.start_workflow(
            HelpdeskFollowUp.run,
            FollowUpInput(conversation=slug, waits=waits, trigger_tag=TAG),
            id=workflow_id_for("reamaze", slug),
            task_queue=self.task_queue,
        )

    def outcome(self, slug: str) -> FollowUpRecord:
        records = self.store.list_followups(conversation=slug)
        assert len(records) == 1, records
        return records[0]

    async def wait_outcome(self, slug: str, within: float = 30) -> FollowUpRecord:
        await wait_for(
            lambda: bool(self.store.list_followups(conversation=slug)),
            within=within,
            failure=f"no outcome for {slug}",
        )
        return self.outcome(slug)

    def bodies(self, slug: str) -> list[str]:
        return [post["message"]["body"] for post in self.fakes.reamaze.posts_for(slug)]


@pytest.fixture
async def rig(
    time_env: WorkflowEnvironment, store: Store, sqlite_url: str, task_queue: str, tmp_path: Path
) -> AsyncIterator[Rig]:
    with running_fakes() as fakes:
        settings = settings_for(fakes, sqlite_url, task_queue, write_script_config(tmp_path))
        async with nudge_worker(time_env.client, settings, store):
            yield Rig(time_env, fakes, store, task_queue)


async def test_two_followups_then_tag_removed(rig: Rig) -> None:
    rig.fakes.gemini.reply("Hi! Still thinking about the monstera?")
    rig.fakes.gemini.reply("Just checking in once more about the monstera.")
    slug = rig.conversation()
    result = await (await rig.start(slug)).result()

    assert result.status == FollowUpStatus.completed
    posts = rig.fakes.reamaze.posts_for(slug)
    assert len(posts) == 2
    first, second = (post["message"] for post in posts)
    assert first["body"].startswith("Hi! Still thinking about the monstera?")
    assert "[Plant Care Guides](https://shop.test/care)" in first["body"], (
        "step 1 carries the links"
    )
    assert "Plant Care Guides" not in second["body"]
    assert first["suppress_autoresolve"] is True and second["suppress_autoresolve"] is True
    assert first["origin_id"] != second["origin_id"]
    assert first["origin_id"].startswith("nudge:")
    assert rig.fakes.reamaze.tags(slug) == ["vip"], "the trigger tag is removed, the others kept"

    # The prompt of the original script's config.json was used, with the conversation in it.
    prompt = rig.fakes.gemini.requests[0]["contents"][0]["parts"][0]["text"]
    assert prompt.startswith("Step one prompt.") and "Customer: Do you ship monsteras?" in prompt

    outcome = rig.outcome(slug)
    assert outcome.status == "completed" and outcome.tag_removed and not outcome.fallback_used
    step1, step2 = outcome.steps
    assert step1["sent_at"] and step2["sent_at"]
    due1, fired1 = (
        datetime.fromisoformat(step1["due_at"]),
        datetime.fromisoformat(step1["fired_at"]),
    )
    due2 = datetime.fromisoformat(step2["due_at"])
    assert (
        outcome.started_at + timedelta(minutes=30)
        <= due1
        <= outcome.started_at + timedelta(minutes=31)
    )
    assert fired1 >= due1
    # (workflow time: the time-skipping server jumps it; sent_at is the database's wall clock)
    assert timedelta(hours=24) <= due2 - fired1 < timedelta(hours=24, minutes=1), (
        "wait 2 follows step 1"
    )


async def test_purchase_before_first_step_sends_nothing(rig: Rig) -> None:
    slug = rig.conversation()
    rig.fakes.reamaze.add_message(slug, "Payment successful, thanks!", email="customer@example.com")
    handle = await rig.start(slug)
    result = await handle.result()
    assert result.status == FollowUpStatus.purchase_detected
    assert rig.fakes.reamaze.posts_for(slug) == []
    assert rig.outcome(slug).status == "purchase_detected"
    assert TAG not in rig.fakes.reamaze.tags(slug)
    # The sequence did its job: green in the Web UI, not a failure.
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED


async def test_purchase_between_steps_stops_the_second(rig: Rig) -> None:
    slug = rig.conversation()
    handle = await rig.start(slug)
    await rig.env.sleep(timedelta(minutes=31))
    await eventually(lambda: bool(rig.fakes.reamaze.posts_for(slug)), within=10)
    assert len(rig.fakes.reamaze.posts_for(slug)) == 1
    rig.fakes.reamaze.add_message(slug, "I placed an order (#1001)", email="customer@example.com")
    result = await handle.result()
    assert result.status == FollowUpStatus.purchase_detected
    assert len(rig.fakes.reamaze.posts_for(slug)) == 1
    assert len(rig.outcome(slug).steps) == 1


async def test_staff_and_our_own_words_are_not_purchases(rig: Rig) -> None:
    rig.fakes.gemini.reply("Your order # is waiting whenever you are ready!")  # our own text
    slug = rig.conversation()
    rig.fakes.reamaze.add_message(
        slug, "Use order #55 as reference", email="agent@shop.test", staff=True
    )
    result = await (await rig.start(slug)).result()
    assert result.status == FollowUpStatus.completed
    assert len(rig.fakes.reamaze.posts_for(slug)) == 2


async def test_tag_removed_by_agent_stops_the_sequence(rig: Rig) -> None:
    slug = rig.conversation()
    rig.fakes.reamaze.set_tags(slug, ["vip"])
    result = await (await rig.start(slug)).result()
    assert result.status == FollowUpStatus.tag_removed
    assert rig.fakes.reamaze.posts_for(slug) == []


async def test_cancel_during_the_wait_removes_the_tag_and_records(
    rig: Rig, sqlite_url: str
) -> None:
    slug = rig.conversation()
    handle = await rig.start(slug)
    await rig.env.sleep(timedelta(minutes=5))
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert isinstance(failure.value.cause, CancelledError)
    assert rig.fakes.reamaze.posts_for(slug) == []
    assert rig.fakes.reamaze.tags(slug) == ["vip"]
    outcome = rig.outcome(slug)
    assert outcome.status == "cancelled" and outcome.tag_removed
    assert outcome.failure_reason is None, "a cancel is no failure"
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED

    # Temporal's enum spells it CANCELED; what we say spells it as our status does.
    app = create_app(Settings(_env_file=None, database_url=sqlite_url), store=rig.store)
    app.dependency_overrides[get_temporal] = lambda: rig.env.client
    token = rig.store.create_token(Role.admin)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://nudge.test"
    ) as api:
        again = await api.post(
            f"/v1/followups/{handle.id}/cancel", headers={"Authorization": f"Bearer {token}"}
        )
    assert again.status_code == 409, again.text
    assert again.json()["detail"] == f"workflow_id: {handle.id} is not running (cancelled)"


async def test_cancel_while_reamaze_is_retried_is_a_cancel_not_a_failure(rig: Rig) -> None:
    """A cancel that arrives while an activity is pending (here: Re:amaze asked us to come
    back in an hour) ends the run as cancelled, recorded without a failure reason."""
    slug = rig.conversation()
    rig.fakes.reamaze.fail_next("GET", f"/conversations/{slug}", 429, retry_after="3600")
    handle = await rig.start(slug)
    await rig.env.sleep(timedelta(minutes=31))
    await wait_for(
        lambda: ("GET", f"/conversations/{slug}") in rig.fakes.reamaze.requests,
        within=10,
        failure="step 1 never read the conversation",
    )
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert isinstance(failure.value.cause, CancelledError)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    outcome = rig.outcome(slug)
    assert outcome.status == "cancelled" and outcome.failure_reason is None
    assert outcome.tag_removed and rig.fakes.reamaze.posts_for(slug) == []


async def test_deleted_conversation_ends_as_gone(rig: Rig) -> None:
    slug = rig.conversation()
    rig.fakes.reamaze.delete_conversation(slug)
    result = await (await rig.start(slug)).result()
    assert result.status == FollowUpStatus.conversation_gone
    assert rig.outcome(slug).status == "conversation_gone"


async def test_server_errors_are_retried_and_post_once(rig: Rig) -> None:
    slug = rig.conversation()
    rig.fakes.reamaze.fail_next("POST", f"/conversations/{slug}/messages", 500, times=2)
    rig.fakes.reamaze.fail_next("GET", f"/conversations/{slug}", 429, times=1, retry_after="1")
    result = await (await rig.start(slug)).result()
    assert result.status == FollowUpStatus.completed
    assert len(rig.fakes.reamaze.posts_for(slug)) == 2


async def test_rejected_post_fails_with_a_reason(rig: Rig) -> None:
    slug = rig.conversation()
    rig.fakes.reamaze.fail_next(
        "POST", f"/conversations/{slug}/messages", 422, body={"errors": {"body": ["is invalid"]}}
    )
    handle = await rig.start(slug)
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert isinstance(failure.value.cause, ApplicationError)
    assert failure.value.cause.type == "FollowUpFailed" and "422" in failure.value.cause.message
    outcome = rig.outcome(slug)
    assert outcome.status == "failed" and outcome.failure_reason and "422" in outcome.failure_reason
    assert outcome.tag_removed


async def test_a_failed_run_is_a_failed_workflow_with_its_outcome_recorded(
    rig: Rig, sqlite_url: str
) -> None:
    """Re:amaze refusing our credentials cannot succeed on retry: the run records its outcome
    and removes the tag, then ends FAILED, red in the Web UI with the reason in its failure,
    and the API's listing gives the same reason."""
    slug = rig.conversation()
    rig.fakes.reamaze.fail_next("GET", f"/conversations/{slug}", 401)
    handle = await rig.start(slug)
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()

    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.FAILED
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "FollowUpFailed"
    assert cause.non_retryable
    assert cause.message.startswith("follow-up failed: ") and "401" in cause.message

    outcome = rig.outcome(slug)
    assert outcome.status == "failed" and outcome.tag_removed
    assert outcome.failure_reason and "401" in outcome.failure_reason
    assert cause.message == f"follow-up failed: {outcome.failure_reason}"
    assert rig.fakes.reamaze.posts_for(slug) == []

    app = create_app(Settings(_env_file=None, database_url=sqlite_url), store=rig.store)
    token = rig.store.create_token(Role.user)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://nudge.test"
    ) as api:
        listed = await api.get(
            "/v1/followups",
            params={"conversation": slug, "status": "failed"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert listed.status_code == 200, listed.text
    [row] = listed.json()
    assert row["failure_reason"] == outcome.failure_reason


async def test_customer_unsubscribed_from_marketing_gets_no_followup(rig: Rig) -> None:
    """Follow-ups are marketing: a customer who used an unsubscribe link hears nothing more."""
    rig.store.suppress(
        "email", "customer@example.com", scope="marketing", reason="unsubscribe link",
        source=OptOutSource.unsubscribe_link,
    )  # fmt: skip
    slug = rig.conversation()
    result = await (await rig.start(slug)).result()

    assert result.status == FollowUpStatus.suppressed
    assert result.reason is not None and "unsubscribe link" in result.reason
    assert rig.fakes.reamaze.posts_for(slug) == []
    assert result.tag_removed, "the tag goes, so the poll does not start it again"
    assert rig.outcome(slug).status == "suppressed"


async def test_followup_due_in_quiet_hours_waits_for_the_morning(
    rig: Rig, sqlite_url: str, tmp_path: Path
) -> None:
    """Where quiet hours are set to hold helpdesk replies too, they hold a follow-up that
    falls due inside them until they end, then the conversation is read again (a purchase
    meanwhile would stop it) and the message goes."""
    now = await rig.env.get_current_time()
    quiet = PolicySettings(
        quiet_hours_start=(now + timedelta(minutes=10)).strftime("%H:%M"),
        quiet_hours_end=(now + timedelta(hours=3)).strftime("%H:%M"),
        quiet_hours_channels=[ChannelName.reamaze],
    )
    queue = f"{rig.task_queue}-quiet"
    settings = settings_for(rig.fakes, sqlite_url, queue, write_script_config(tmp_path))
    settings.policy = quiet
    slug = rig.conversation()
    async with nudge_worker(rig.env.client, settings, rig.store):
        handle = await rig.env.client.start_workflow(
            HelpdeskFollowUp.run,
            FollowUpInput(conversation=slug, waits=[timedelta(minutes=30)], trigger_tag=TAG),
            id=workflow_id_for("reamaze", slug),
            task_queue=queue,
        )
        await rig.env.sleep(timedelta(minutes=40))  # due at 30 min: inside quiet hours
        held = f"held_until_{quiet.quiet_hours_end}_quiet_hours"
        await until_status(handle, held, within=4)
        assert await handle.query(HelpdeskFollowUp.status) == held
        assert rig.fakes.reamaze.posts_for(slug) == []

        await rig.env.sleep(timedelta(hours=3))  # past the end of quiet hours
        result = await handle.result()
    assert result.status == FollowUpStatus.completed
    assert len(rig.fakes.reamaze.posts_for(slug)) == 1


async def test_llm_down_sends_the_fallback_and_says_so(rig: Rig) -> None:
    rig.fakes.gemini.fail_next(500, times=10)
    slug = rig.conversation()
    result = await (await rig.start(slug, waits=[timedelta(minutes=30)])).result()
    assert result.status == FollowUpStatus.completed
    body = rig.bodies(slug)[0]
    assert body.startswith("Fallback one.") and "Plant Care Guides" in body
    outcome = rig.outcome(slug)
    assert outcome.fallback_used
    assert "after 3 attempts" in (outcome.steps[0]["fallback_reason"] or "")
    assert len(rig.fakes.gemini.requests) == 3


async def test_blocked_or_placeholder_output_uses_the_fallback(rig: Rig) -> None:
    rig.fakes.gemini.reply_blocked()
    rig.fakes.gemini.reply("Hi [Customer Name], still keen?")
    slug = rig.conversation()
    await (await rig.start(slug)).result()
    assert rig.bodies(slug)[0].startswith("Fallback one.")
    assert rig.bodies(slug)[1] == "Fallback two."
    reasons = [step["fallback_reason"] for step in rig.outcome(slug).steps]
    assert "blocked" in reasons[0] and "placeholder" in reasons[1]


async def test_poll_starts_one_sequence_per_tagged_conversation(rig: Rig) -> None:
    rig.fakes.reamaze.page_size = 2
    slugs = [rig.conversation() for _ in range(3)]
    rig.conversation(tags=["other"])
    # A real-time wait: the children are the poll's, so no result() call of ours skips time.
    poll = PollInput(trigger_tag=TAG, waits=[timedelta(seconds=2)])

    async def run_poll(n: int) -> PollResult:
        return await rig.env.client.execute_workflow(
            HelpdeskPoll.run, poll, id=f"poll-{n}-{rig.task_queue}", task_queue=rig.task_queue
        )

    first = await run_poll(1)
    ours = set(first.started) & {workflow_id_for("reamaze", s) for s in slugs}
    assert len(ours) == 3
    second = await run_poll(2)  # the same conversations again, while their sequences run
    assert not set(second.started) & ours
    for slug in slugs:
        await rig.wait_outcome(slug)
        assert len(rig.fakes.reamaze.posts_for(slug)) == 1


async def test_poll_skips_a_tag_left_behind_by_a_finished_sequence(rig: Rig) -> None:
    leftover = rig.conversation()
    rig.store.record_followup(
        FollowUpRecord(
            workflow_id=workflow_id_for("reamaze", leftover),
            run_id="earlier",
            helpdesk="reamaze",
            conversation=leftover,
            status="completed",
            started_at=datetime(2026, 1, 1, tzinfo=UTC),
            finished_at=datetime(2026, 1, 2, tzinfo=UTC),
            tag_removed=False,  # e.g. NUDGE_REAMAZE__REMOVE_TAG_ON_FINISH=false
        )
    )
    retagged = rig.conversation()
    rig.store.record_followup(
        FollowUpRecord(
            workflow_id=workflow_id_for("reamaze", retagged),
            run_id="earlier",
            helpdesk="reamaze",
            conversation=retagged,
            status="completed",
            started_at=datetime(2026, 1, 1, tzinfo=UTC),
            finished_at=datetime(2026, 1, 2, tzinfo=UTC),
            tag_removed=True,  # we took it off; an agent put it back: a new request
        )
    )
    result = await rig.env.client.execute_workflow(
        HelpdeskPoll.run,
        PollInput(trigger_tag=TAG, waits=[timedelta(minutes=30)]),
        id=f"poll-{rig.task_queue}",
        task_queue=rig.task_queue,
    )
    assert result.started == [workflow_id_for("reamaze", retagged)]


async def test_the_frequency_cap_holds_a_step_and_counts_the_replies(
    fresh_time_env: WorkflowEnvironment,
    store: Store,
    sqlite_url: str,
    task_queue: str,
    tmp_path: Path,
) -> None:
    """Follow-up replies go through the send path, so they count towards the frequency cap
    like every marketing message: with one per 48 hours, step 2 (due a day after step 1)
    waits until step 1 is 48 hours old, then goes out once."""
    env = fresh_time_env
    with running_fakes() as fakes:
        settings = settings_for(fakes, sqlite_url, task_queue, write_script_config(tmp_path))
        settings.policy = PolicySettings(
            quiet_hours_start="00:00",
            quiet_hours_end="00:00",
            frequency_cap=1,
            frequency_window=timedelta(hours=48),
        )
        rig = Rig(env, fakes, store, task_queue)
        slug = rig.conversation()
        async with nudge_worker(env.client, settings, store):
            handle = await rig.start(slug)
            await env.sleep(timedelta(minutes=31))
            assert await eventually(lambda: len(fakes.reamaze.posts_for(slug)) == 1)
            await env.sleep(timedelta(hours=24, minutes=5))  # step 2 is due
            assert await until_status_like(handle, "held_until_", "_frequency_cap")
            assert len(fakes.reamaze.posts_for(slug)) == 1

            result = await handle.result()
    assert result.status == FollowUpStatus.completed
    assert len(fakes.reamaze.posts_for(slug)) == 2
    step1, step2 = result.steps
    assert step1.outbox_key and step2.outbox_key
    rows = [store.get_outbox(step1.outbox_key), store.get_outbox(step2.outbox_key)]
    assert all(row is not None and row.message_class == "marketing" for row in rows)
    assert all(row is not None and row.contact_id is not None for row in rows)
    assert step2.fired_at is not None and step1.fired_at is not None
    # The cap counts step 1 from when the database recorded it (the wall clock, at the start
    # of this test's workflow time): step 2 went out about 48 hours after that.
    sent_at = await env.get_current_time()
    assert sent_at - step2.fired_at >= timedelta(hours=23), "step 2 waited out the cap"


async def until_status_like(handle: WorkflowHandle[Any, Any], prefix: str, suffix: str) -> bool:
    """Whether the ``status`` query answers ``prefix...suffix`` within the usual patience."""

    async def reached() -> bool:
        status = await handle.query(HelpdeskFollowUp.status)
        return bool(status.startswith(prefix) and status.endswith(suffix))

    return await eventually(reached)


async def until_status(handle: WorkflowHandle[Any, Any], status: str, within: float = 30) -> bool:
    """Whether the follow-up's ``status`` query answers ``status`` within ``within`` seconds."""

    async def reached() -> bool:
        return bool(await handle.query(HelpdeskFollowUp.status) == status)

    return await eventually(reached, within=within)
