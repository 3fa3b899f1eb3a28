"""A store write a workflow needs (its bookkeeping) is retried through minutes of a database
outage, not forever: then the run ends FAILED saying what it could not record.

Real workflow, real activities, a real database whose table is gone (not a mock of ours),
on the time-skipping server, so the minutes of retries take moments.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from store.repo import Store
from tests.stack import nudge_worker, running_fakes, settings_for, write_script_config
from workflows.bookkeeping import ATTEMPTS, FAILED
from workflows.helpdesk_followup import FollowUpInput, HelpdeskFollowUp, workflow_id_for

TAG = "Needs-Sales-Followup"


async def test_a_follow_up_whose_outcome_cannot_be_recorded_fails_saying_so(
    time_env: WorkflowEnvironment, store: Store, sqlite_url: str, task_queue: str, tmp_path: Path
) -> None:
    engine = create_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE followups"))
    engine.dispose()
    with running_fakes() as fakes:
        slug = f"conv-{uuid.uuid4().hex[:8]}"
        fakes.reamaze.add_conversation(slug, tags=["vip"])  # the tag is gone: nothing to send
        settings = settings_for(fakes, sqlite_url, task_queue, write_script_config(tmp_path))
        async with nudge_worker(time_env.client, settings, store):
            handle = await time_env.client.start_workflow(
                HelpdeskFollowUp.run,
                FollowUpInput(conversation=slug, waits=[timedelta(minutes=30)], trigger_tag=TAG),
                id=workflow_id_for("reamaze", slug),
                task_queue=task_queue,
            )
            with pytest.raises(WorkflowFailureError) as failed:
                await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == FAILED
    assert cause.message.startswith(
        f"could not record the follow-up's outcome in the database after {ATTEMPTS} attempts: "
    )
    assert "followups" in cause.message, "the database's own words follow"
    started = [
        event.activity_task_started_event_attributes.attempt
        async for event in handle.fetch_history_events()
        if event.HasField("activity_task_started_event_attributes")
    ]
    assert started[-1] == ATTEMPTS, "the last activity (the outcome) ran ATTEMPTS times"
