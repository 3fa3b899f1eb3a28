"""HelpdeskPoll: run by a Temporal Schedule, starts one HelpdeskFollowUp per tagged conversation.

The follow-up's workflow id is the conversation's, so a conversation polled again (or
re-tagged) while its sequence runs cannot get a second one: the start is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.helpdesk import FindTaggedInput, HelpdeskActivities
    from domain.channels import ChannelName
    from domain.next_action import NextAction
    from workflows.helpdesk_followup import (
        HELPDESK_API,
        FollowUpInput,
        HelpdeskFollowUp,
        start_options,
    )
    from workflows.search_attributes import NUDGE_KIND


@dataclass
class PollInput:
    trigger_tag: str
    waits: list[timedelta]
    remove_tag_on_finish: bool = True
    helpdesk: str = ChannelName.reamaze.value


@dataclass
class PollResult:
    found: int
    started: list[str]
    already_running: int


def schedule_id_for(helpdesk: str = ChannelName.reamaze.value, task_queue: str = "nudge") -> str:
    """``helpdesk-poll:reamaze``; deployments on other task queues get their own schedule."""
    suffix = "" if task_queue == "nudge" else f"@{task_queue}"
    return f"helpdesk-poll:{helpdesk}{suffix}"


@workflow.defn
class HelpdeskPoll:
    def __init__(self) -> None:
        self._next = NextAction("looks for tagged conversations now")

    @workflow.query
    def next_action(self) -> NextAction:
        """What it does next, when and why; its current details say the same sentence."""
        return self._next

    @workflow.run
    async def run(self, request: PollInput) -> PollResult:
        self._plan(self._next)
        workflow.upsert_search_attributes([NUDGE_KIND.value_set("helpdesk_poll")])
        tagged = await workflow.execute_activity_method(
            HelpdeskActivities.find_tagged_conversations,
            FindTaggedInput(tag=request.trigger_tag),
            start_to_close_timeout=timedelta(minutes=5),
            # A poll that cannot finish before the next one is simply superseded by it.
            schedule_to_close_timeout=timedelta(minutes=10),
            retry_policy=HELPDESK_API,
        )
        self._plan(
            NextAction(
                "starts follow-ups now",
                why=f"{len(tagged)} conversations tagged {request.trigger_tag}",
            )
        )
        started: list[str] = []
        running = 0
        for conversation in tagged:
            start = start_options(conversation.slug, request.helpdesk)
            try:
                await workflow.start_child_workflow(
                    HelpdeskFollowUp.run,
                    FollowUpInput(
                        conversation=conversation.slug,
                        waits=request.waits,
                        trigger_tag=request.trigger_tag,
                        remove_tag_on_finish=request.remove_tag_on_finish,
                        helpdesk=request.helpdesk,
                        subject=conversation.subject,
                    ),
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                    **start.options(),
                )
            except WorkflowAlreadyStartedError:
                running += 1
                continue
            started.append(start.id)
        self._plan(
            NextAction(
                "nothing",
                why=f"ended: {len(started)} follow-ups started, {running} already running",
            )
        )
        return PollResult(found=len(tagged), started=started, already_running=running)

    def _plan(self, next_action: NextAction) -> None:
        self._next = next_action
        workflow.set_current_details(next_action.sentence())
