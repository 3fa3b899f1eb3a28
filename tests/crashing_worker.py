"""A Nudge worker that dies (``os._exit``, no clean-up, as a killed process) when a scheduled
follow-up settles its credits: ``before`` the settlement is written, or right ``after`` it is
committed and before the workflow hears of it. Run as ``python -m tests.crashing_worker
before|after`` with the same environment as ``nudge worker``; a real ``nudge worker`` then
takes the run over."""

from __future__ import annotations

import asyncio
import os
import sys

from temporalio import activity

from activities.scheduled_followups import ScheduledFollowUpActivities
from domain.scheduled_followups import Settled, SettleRequest
from settings import get_settings
from store.repo import Store
from temporal_client import connect
from worker import build_activities, build_worker

CRASHED = 86
"""The exit status that says the crash happened where it was meant to."""


class DiesWhenSettling(ScheduledFollowUpActivities):
    def __init__(self, store: Store, when: str) -> None:
        super().__init__(store)
        self.when = when

    @activity.defn(name="settle_followup")
    async def settle_followup(self, request: SettleRequest) -> Settled:
        if self.when == "before":
            os._exit(CRASHED)
        settled = await super().settle_followup(request)
        os._exit(CRASHED)
        return settled  # never reached


async def main(when: str) -> None:
    settings = get_settings()
    store = Store.from_url(settings.database_url)
    client = await connect(settings)
    async with build_activities(settings, store) as activities:
        activities.scheduled = DiesWhenSettling(store, when)
        await build_worker(client, settings, activities.all()).run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
