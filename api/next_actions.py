"""What running workflows will do next: each run's ``next_action`` query, asked of many runs
at once, for the lists that show pending work (``/v1/followups/running``,
``/v1/contacts/{id}/next``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from domain.next_action import NextAction

log = logging.getLogger(__name__)

QUERY_TIMEOUT = timedelta(seconds=3)
"""A run whose worker does not answer in time (stopped, busy) shows ``next_action: null``
rather than holding up the list."""


class NextActionOut(BaseModel):
    what: str
    at: datetime | None
    why: str
    sentence: str
    """The same sentence as the run's current details in the Temporal Web UI."""

    @classmethod
    def of(cls, action: NextAction) -> NextActionOut:
        return cls(what=action.what, at=action.at, why=action.why, sentence=action.sentence())


async def next_actions(
    client: Client, runs: Sequence[tuple[str, str | None]]
) -> list[NextActionOut | None]:
    """Each run's answer, in the order given, asked concurrently; None for a run that did
    not answer within ``QUERY_TIMEOUT`` or could not (ended and gone, no such query)."""
    return list(await asyncio.gather(*(_ask(client, *run) for run in runs)))


async def _ask(client: Client, workflow_id: str, run_id: str | None) -> NextActionOut | None:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    try:
        action = await asyncio.wait_for(
            handle.query("next_action", result_type=NextAction, rpc_timeout=QUERY_TIMEOUT),
            QUERY_TIMEOUT.total_seconds(),
        )
    except (TimeoutError, RPCError, WorkflowQueryFailedError) as error:
        log.info("%s did not say its next action: %s", workflow_id, error)
        return None
    return NextActionOut.of(action)
