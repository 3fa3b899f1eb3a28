"""Recorded histories must replay on today's workflow code.

A failure here means a change would break runs that are waiting right now (a 24-hour timer
is a long time): guard the new logic with `workflow.patched` instead of re-recording. New
paths get new histories (`python -m tests.record_histories <prefix>`), listed below.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import WORKFLOWS

HERE = Path(__file__).with_name("histories")
RECORDED = {
    # HelpdeskFollowUp: before the contact policy, with it, and through the one send path
    "helpdesk_followup_cancelled",
    "helpdesk_followup_completed",
    "helpdesk_followup_purchase",
    "helpdesk_followup_policy_cancelled",
    "helpdesk_followup_policy_completed",
    "helpdesk_followup_policy_purchase",
    "helpdesk_followup_send_path_cancelled",
    "helpdesk_followup_send_path_completed",
    "helpdesk_followup_send_path_purchase",
    # ... and a failed sequence, which since "failed-runs-fail" ends as a FAILED run
    "helpdesk_followup_outcome_failed",
    "helpdesk_poll_started_two",
    "menu_conversation_completed",
    "menu_conversation_delivery_failed",
    "menu_conversation_expired",
    "menu_conversation_fallback_twilio",
    "menu_conversation_handoff",
    "menu_conversation_release_queued",
    # SendMessage: before it waited for statuses, waiting on an SMS, and on a channel that
    # reports none (it no longer waits there)
    "send_message_v1_sent",
    "send_message_sent",
    "send_message_delivered",
    "send_message_reamaze_sent",
    # Automation rules: a run sent and one skipped (conditions no longer held), a watch
    # that fired once and waits, a reminder moved then sent, a reminder cancelled
    "automation_run_sent",
    "automation_run_skipped",
    "contact_watch_fired",
    "booking_reminder_started",
    "booking_reminder_cancelled",
    # Scheduled follow-ups: moved, sent, then delivered and read; cancelled while waiting
    "scheduled_followup_read",
    "scheduled_followup_cancelled",
}
HISTORIES = sorted(HERE.glob("*.json"))


def test_the_recorded_histories_are_the_listed_ones() -> None:
    assert {path.stem for path in HISTORIES} == RECORDED


PREFIXES = {
    "HelpdeskFollowUp": "helpdesk_followup_",
    "HelpdeskPoll": "helpdesk_poll_",
    "MenuConversation": "menu_conversation_",
    "SendMessage": "send_message_",
    "AutomationRun": "automation_run_",
    "ContactWatch": "contact_watch_",
    "BookingReminder": "booking_reminder_",
    "ScheduledFollowUp": "scheduled_followup_",
}


def test_every_workflow_the_worker_runs_has_a_recorded_history() -> None:
    recorded = {path.stem for path in HISTORIES}
    assert {workflow.__name__ for workflow in WORKFLOWS} == set(PREFIXES)
    for name, prefix in PREFIXES.items():
        assert any(stem.startswith(prefix) for stem in recorded), name


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replays(path: Path) -> None:
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
