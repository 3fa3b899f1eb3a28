"""Recorded histories must replay on today's workflow code.

A failure here means a change would break runs that are waiting right now (a 24-hour timer
is a long time): guard the new logic with `workflow.patched` instead of re-recording.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.helpdesk_followup import HelpdeskFollowUp
from workflows.helpdesk_poll import HelpdeskPoll
from workflows.menu_conversation import MenuConversation
from workflows.send_message import SendMessage

HISTORIES = sorted(Path(__file__).with_name("histories").glob("*.json"))


def test_histories_are_recorded() -> None:
    assert len(HISTORIES) >= 9


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replays(path: Path) -> None:
    replayer = Replayer(
        workflows=[HelpdeskFollowUp, HelpdeskPoll, MenuConversation, SendMessage],
        data_converter=pydantic_data_converter,
    )
    history = WorkflowHistory.from_json(f"followup-{path.stem}", path.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
