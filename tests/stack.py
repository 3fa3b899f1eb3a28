"""A Nudge worker wired to fake providers: real HTTP, real database, real activities."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from settings import (
    FollowupSettings,
    GeminiSettings,
    LLMSettings,
    PolicySettings,
    ReamazeSettings,
    Settings,
    TemporalSettings,
)
from store.repo import Store
from tests.fakes.gemini import FakeGemini
from tests.fakes.reamaze import FakeReamaze
from tests.fakes.server import RunningServer, serve
from worker import build_activities, build_worker

SCRIPT_CONFIG = {
    "followup1_fallback_message": "Fallback one.",
    "followup2_fallback_message": "Fallback two.",
    "llm_prompt_followup1": "Step one prompt.\nConversation:\n{conversation_text}\n\nWrite only the message:",
    "llm_prompt_followup2": "Step two prompt.\nConversation:\n{conversation_text}\n\nWrite only the message:",
    "followup1_helpful_links_header": "\n\nHelpful Resources:",
    "followup1_helpful_links": [{"text": "Plant Care Guides", "url": "https://shop.test/care"}],
    "gemini_model": "gemini-1.5-flash-latest",
    "gemini_summary_max_output_tokens": 250,
    "gemini_summary_temperature": 0.5,
    "poll_interval_minutes": 15,
    "process_interval_minutes": 5,
    "max_api_retries": 3,
    "api_retry_delay_seconds": 5,
}


@dataclass
class Fakes:
    reamaze: FakeReamaze
    gemini: FakeGemini
    reamaze_server: RunningServer
    gemini_server: RunningServer


@contextmanager
def running_fakes() -> Iterator[Fakes]:
    reamaze, gemini = FakeReamaze(), FakeGemini()
    with serve(reamaze.app) as reamaze_server, serve(gemini.app) as gemini_server:
        yield Fakes(reamaze, gemini, reamaze_server, gemini_server)


def settings_for(
    fakes: Fakes,
    database_url: str,
    task_queue: str,
    config_file: Path | None = None,
    *,
    waits: list[timedelta] | None = None,
    llm: str = "gemini",
) -> Settings:
    return settings_for_urls(
        fakes.reamaze_server.url,
        fakes.gemini_server.url,
        database_url,
        task_queue,
        config_file,
        waits=waits,
        llm=llm,
    )


def settings_for_urls(
    reamaze_url: str,
    gemini_url: str,
    database_url: str,
    task_queue: str,
    config_file: Path | None = None,
    *,
    waits: list[timedelta] | None = None,
    llm: str = "gemini",
) -> Settings:
    """Settings pointing at fakes with their default credentials."""
    reamaze, gemini = FakeReamaze(), FakeGemini()
    return Settings(
        database_url=database_url,
        reamaze=ReamazeSettings(
            brand="shop",
            base_url=reamaze_url,
            login_email=reamaze.login_email,
            api_token=reamaze.api_token,
            poll_interval=timedelta(seconds=1),
            timeout=timedelta(seconds=5),
        ),
        followup=FollowupSettings(
            waits=waits or [timedelta(minutes=30), timedelta(hours=24)], config_file=config_file
        ),
        llm=LLMSettings(provider=llm),
        gemini=GeminiSettings(api_key=gemini.api_key, base_url=gemini_url),
        temporal={"task_queue": task_queue},
        # Follow-ups are marketing: quiet hours would hold them at whatever real (or skipped)
        # time a test runs. Tests of quiet hours set them explicitly.
        policy=PolicySettings(quiet_hours_start="00:00", quiet_hours_end="00:00"),
    )


def quiet_now_on_the_dev_server(settings: Settings, env: WorkflowEnvironment, channels: str) -> str:
    """Quiet hours set around the real clock on ``channels``, so sends there hold at any time
    of day, and the settings pointed at the dev server; returns when the quiet hours end."""
    now = datetime.now(UTC)
    end = (now + timedelta(hours=2)).strftime("%H:%M")
    settings.policy = PolicySettings(
        quiet_hours_start=(now - timedelta(hours=1)).strftime("%H:%M"),
        quiet_hours_end=end,
        quiet_hours_channels=channels,
    )
    settings.temporal = TemporalSettings(
        address=env.client.service_client.config.target_host,
        task_queue=settings.temporal.task_queue,
    )
    return end


def write_script_config(directory: Path) -> Path:
    path = directory / "config.json"
    path.write_text(json.dumps(SCRIPT_CONFIG))
    return path


@asynccontextmanager
async def nudge_worker(client: Client, settings: Settings, store: Store) -> AsyncIterator[Worker]:
    async with build_activities(settings, store) as activities:
        async with build_worker(client, settings, activities.all()) as worker:
            yield worker
