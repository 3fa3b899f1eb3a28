"""Benchmark: signed provider webhooks (inbound and status, with duplicates) at the service.

Not a test: it prints figures. The HTTP service (uvicorn, one process, SQLite or the
PostgreSQL named by ``--database-url``) runs in a child process on 127.0.0.1, as in
production, with a Temporal dev server to route WhatsApp messages and signal statuses to;
this process signs each request the way Twilio and Meta do and posts them with
``--concurrency`` connections at once.

    .venv/bin/python bench/webhooks.py                        # 2000 requests, 10% duplicates
    .venv/bin/python bench/webhooks.py --requests 5000 --concurrency 100

The mix is a quarter each of Twilio inbound SMS, Twilio status callbacks, WhatsApp Cloud
inbound messages and WhatsApp ``statuses``; the duplicates are re-posts of earlier requests
(providers retry). Prints requests per second, p50/p99/max latency, and how many messages
and statuses were processed exactly once (none twice, none lost; WhatsApp messages also
routed, in one attempt), read back from the database.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx
from sqlalchemy import select

from bench.common import Connection, dev_server, milliseconds, raw_post
from domain.status import OutboxStatus
from settings import Settings, TemporalSettings, TwilioSettings, WhatsAppSettings
from store.db import upgrade
from store.models import DeliveryEvent, InboundMessage
from store.repo import Store
from tests.fakes.graph import FakeGraph
from tests.fakes.server import free_port
from tests.fakes.twilio import FakeTwilio

APP_SECRET = "bench-meta-app-secret"
OUR_NUMBER = "+15005550006"
KINDS = ("twilio_inbound", "twilio_status", "whatsapp_inbound", "whatsapp_status")


@dataclass(frozen=True)
class Request:
    kind: str
    path: str
    provider_id: str
    content: bytes
    headers: dict[str, str]


def serve(database_url: str, port: int, account_sid: str, auth_token: str, temporal: str) -> None:
    """Child process: the HTTP service exactly as `nudge serve` runs it."""
    import uvicorn

    from service import create_app

    settings = Settings(
        _env_file=None,
        database_url=database_url,
        public_url=f"http://127.0.0.1:{port}",
        twilio=TwilioSettings(account_sid=account_sid, auth_token=auth_token),
        whatsapp=WhatsAppSettings(app_secret=APP_SECRET, verify_token="bench"),
        temporal=TemporalSettings(address=temporal, task_queue="bench-webhooks"),
    )
    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="error")


def sent_message(store: Store, channel: str, provider_id: str, to: str) -> None:
    """An outbox row as the send path leaves it once the provider accepted the message."""
    key = f"bench:{uuid.uuid4().hex}"
    store.claim_outbox(
        key,
        workflow_id=key,
        channel=channel,
        recipient=to,
        body="Your order has shipped",
        message_class="transactional",
    )
    store.mark_outbox(key, OutboxStatus.sent, provider_message_id=provider_id)


def build_requests(
    store: Store, twilio: FakeTwilio, base_url: str, total: int, duplicates: float, customers: int
) -> list[Request]:
    graph = FakeGraph()
    unique = total - int(total * duplicates)
    phones = [f"+1555{7000000 + i:07d}" for i in range(customers)]
    made: list[Request] = []
    for i in range(unique):
        kind = KINDS[i % len(KINDS)]
        phone = phones[i % customers]
        if kind.startswith("twilio"):
            sid = "SM" + uuid.uuid4().hex
            if kind == "twilio_inbound":
                path = "/webhooks/twilio/inbound"
                form = {"MessageSid": sid, "SmsSid": sid, "From": phone, "To": OUR_NUMBER}
                form |= {"Body": f"Is order {i} on its way?", "NumMedia": "0"}
            else:
                sent_message(store, "sms", sid, phone)
                path = "/webhooks/twilio/status"
                form = {"MessageSid": sid, "MessageStatus": "delivered", "To": phone}
                form |= {"From": OUR_NUMBER, "AccountSid": twilio.account_sid}
            content = str(httpx.QueryParams(form)).encode()
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": twilio.sign(base_url + path, form),
            }
            made.append(Request(kind, path, sid, content, headers))
        else:
            wamid = graph.new_wamid()
            if kind == "whatsapp_inbound":
                payload = graph.inbound_text(phone.lstrip("+"), f"Hello {i}", wamid=wamid)
            else:
                sent_message(store, "whatsapp", wamid, phone)
                payload = graph.status(wamid, "delivered", phone)
            content, headers = graph.signed(payload, APP_SECRET)
            made.append(Request(kind, "/webhooks/whatsapp", wamid, content, headers))
    rng = random.Random(7)
    for original in rng.sample(made, total - unique):
        made.insert(rng.randint(made.index(original) + 1, len(made)), original)
    return made


async def post_all(
    base_url: str, requests: list[Request], concurrency: int
) -> tuple[list[float], Counter[int], float]:
    """Each of ``concurrency`` kept-alive connections posts its next request as soon as the
    last one is answered."""
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    url = httpx.URL(base_url)
    host = f"{url.host}:{url.port}"
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(raw_post(host, request.path, request.content, request.headers))

    async def worker() -> None:
        connection = await Connection.open(url.host, url.port or 80)
        try:
            while not queue.empty():
                raw = queue.get_nowait()
                began = time.perf_counter()
                codes[await connection.exchange(raw)] += 1
                latencies.append(time.perf_counter() - began)
        finally:
            connection.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, codes, time.perf_counter() - began


def exactly_once(store: Store, requests: list[Request]) -> dict[str, tuple[int, int]]:
    """Per kind: (distinct provider ids posted, ids whose effect is in the database once)."""
    posted: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for request in requests:
        posted[request.kind].add(request.provider_id)
    with store.engine.connect() as connection:
        inbound = Counter(
            r[0] for r in connection.execute(select(InboundMessage.provider_message_id))
        )
        events = Counter(
            r[0] for r in connection.execute(select(DeliveryEvent.provider_message_id))
        )
        routed_once = {
            r[0]
            for r in connection.execute(
                select(InboundMessage.provider_message_id).where(
                    InboundMessage.routed_at.is_not(None), InboundMessage.route_attempts == 1
                )
            )
        }
    found: dict[str, tuple[int, int]] = {}
    for kind, ids in posted.items():
        seen = inbound if kind.endswith("inbound") else events
        once = sum(1 for i in ids if seen[i] == 1)
        if kind == "whatsapp_inbound":  # also routed to its conversation, in one attempt
            once = sum(1 for i in ids if seen[i] == 1 and i in routed_once)
        if kind.endswith("status"):
            rows = store.list_outbox(limit=100_000)
            delivered = {r.provider_message_id for r in rows if r.status == OutboxStatus.delivered}
            once = sum(1 for i in ids if seen[i] == 1 and i in delivered)
        found[kind] = (len(ids), once)
    return found


async def wait_until_up(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=1) as client:
        for _ in range(300):
            try:
                await client.get("/healthz")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"the service on {base_url} did not start")


async def run(
    args: argparse.Namespace, url: str
) -> tuple[list[Request], list[float], Counter[int], float]:
    """Post the webhooks at the service in its own process, with a Temporal dev server to
    route messages and signal statuses to (no conversation or sender runs: each routing and
    each status signal is one RPC that finds no workflow, as for most traffic)."""
    env = await dev_server()
    store = Store.from_url(url)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    twilio = FakeTwilio()
    requests = build_requests(
        store, twilio, base_url, args.requests, args.duplicates, args.customers
    )
    store.close()
    context = multiprocessing.get_context("spawn")
    server = context.Process(
        target=serve,
        args=(
            url,
            port,
            twilio.account_sid,
            twilio.auth_token,
            env.client.service_client.config.target_host,
        ),
        daemon=True,
    )
    server.start()
    try:
        await wait_until_up(base_url)
        latencies, codes, elapsed = await post_all(base_url, requests, args.concurrency)
        await asyncio.sleep(1.0)  # routing and status signals, after the answers, settle
    finally:
        server.terminate()
        server.join(10)
        if server.is_alive():  # never leave a server behind to skew the next run
            server.kill()
            server.join(5)
        await env.shutdown()
    return requests, latencies, codes, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--duplicates", type=float, default=0.10)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--customers", type=int, default=400)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        requests, latencies, codes, elapsed = asyncio.run(run(args, url))
        store = Store.from_url(url)
        found = exactly_once(store, requests)
        store.close()

    database = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    print(f"{len(requests)} signed webhooks ({args.duplicates:.0%} duplicates), ", end="")
    print(f"{args.concurrency} connections, {database}")
    print(f"  status codes   {dict(sorted(codes.items()))}")
    print(f"  throughput     {len(requests) / elapsed:8.1f} requests/s ({elapsed:.2f} s)")
    print(f"  latency        {milliseconds(latencies)}")
    total_ids = sum(ids for ids, _ in found.values())
    total_once = sum(once for _, once in found.values())
    for kind, (ids, once) in found.items():
        print(f"  {kind:<17} {once:5d} of {ids:5d} processed exactly once")
    print(f"  exactly once   {total_once} of {total_ids}")
    if total_once != total_ids or any(code >= 300 for code in codes):
        sys.exit(1)


if __name__ == "__main__":
    main()
