"""The one worker: every workflow and activity of Nudge on one task queue.

``python worker.py`` (or ``nudge worker``) runs it. Clients for the outside world are built
here once and injected into the activity classes; tests build the same classes with clients
pointed at fake servers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import PollerBehaviorAutoscaling, Worker

from activities.delivery import DeliveryActivities
from activities.followup_config import load_followup_texts
from activities.helpdesk import HelpdeskActivities
from activities.menus import MenuActivities
from activities.writer import WriterActivities
from integrations.channels import Channel, ChannelName
from integrations.email_smtp import SmtpChannel
from integrations.fcm import FcmChannel
from integrations.llm import TextGenerator, build_generator
from integrations.reamaze import ReamazeClient
from integrations.support_board import SupportBoardChannel
from integrations.twilio_channel import TwilioChannel
from integrations.whatsapp_cloud import WhatsAppCloudChannel
from links import secret_key, unsubscribe_url
from settings import Settings, get_settings
from store.repo import Store
from temporal_client import connect, ensure_search_attributes
from workflows.helpdesk_followup import HelpdeskFollowUp
from workflows.helpdesk_poll import HelpdeskPoll, PollInput, schedule_id_for
from workflows.menu_conversation import MenuConversation
from workflows.send_message import SendMessage

log = logging.getLogger("nudge.worker")

WORKFLOWS: Sequence[type] = (HelpdeskFollowUp, HelpdeskPoll, SendMessage, MenuConversation)


@dataclass
class Activities:
    helpdesk: HelpdeskActivities
    writer: WriterActivities
    delivery: DeliveryActivities
    menus: MenuActivities

    def all(self) -> list[Any]:
        return [
            *self.menus.all(),
            self.delivery.deliver,
            self.delivery.check_contact_policy,
            self.helpdesk.find_tagged_conversations,
            self.helpdesk.read_conversation,
            self.helpdesk.post_reply,
            self.helpdesk.remove_trigger_tag,
            self.helpdesk.record_outcome,
            self.writer.write_followup,
        ]


RETIRED_MODEL_PREFIXES = ("gemini-1.0", "gemini-1.5", "gemini-pro")


def _llm(settings: Settings, config_model: str | None) -> TextGenerator | None:
    """The seed's config.json may name a Gemini model; honour it unless it is retired."""
    if config_model and settings.llm_provider == "gemini":
        if config_model.startswith(RETIRED_MODEL_PREFIXES):
            log.warning(
                "config file names the retired model %s; using %s",
                config_model,
                settings.gemini.model,
            )
        else:
            settings = settings.model_copy(
                update={"gemini": settings.gemini.model_copy(update={"model": config_model})}
            )
    return build_generator(settings)


@asynccontextmanager
async def build_activities(settings: Settings, store: Store) -> AsyncIterator[Activities]:
    texts = load_followup_texts(settings.followup.config_file)
    reamaze = None
    if settings.reamaze.configured:
        reamaze = ReamazeClient(
            settings.reamaze.base_url,
            settings.reamaze.login_email,
            settings.reamaze.api_token,
            timeout=settings.reamaze.timeout.total_seconds(),
        )
    else:
        log.warning(
            "Re:amaze is not configured: no poll schedule, and follow-ups cannot read or post"
        )
    generator = _llm(settings, texts.model)
    channels = build_channels(settings)
    key = secret_key(settings)
    try:
        yield Activities(
            helpdesk=HelpdeskActivities(reamaze, store, settings.reamaze, settings.followup),
            writer=WriterActivities(generator, texts, max_chars=settings.followup.max_chars),
            delivery=DeliveryActivities(
                channels,
                store,
                settings.policy,
                unsubscribe_url=lambda channel, address: unsubscribe_url(
                    settings, key, channel, address
                ),
                status_callback=f"{settings.public_url.rstrip('/')}/webhooks/twilio/status",
                in_flight_grace=settings.delivery.in_flight_grace,
            ),
            menus=MenuActivities(store),
        )
    finally:
        if reamaze is not None:
            await reamaze.aclose()
        for channel in channels.values():
            if channel is not None:
                await channel.aclose()
        close = getattr(generator, "aclose", None)
        if close is not None:
            await close()


def build_channels(settings: Settings) -> dict[ChannelName, Channel | None]:
    """Every channel with credentials gets its client; the others are sandboxed (None)."""
    channels: dict[ChannelName, Channel | None] = {
        ChannelName.email: SmtpChannel(settings.smtp) if settings.smtp.configured else None,
        ChannelName.sms: None,
        ChannelName.whatsapp_twilio: None,
        ChannelName.whatsapp: (
            WhatsAppCloudChannel(settings.whatsapp) if settings.whatsapp.configured else None
        ),
        ChannelName.push: FcmChannel(settings.fcm) if settings.fcm.configured else None,
        ChannelName.support_board: (
            SupportBoardChannel(settings.support_board)
            if settings.support_board.configured
            else None
        ),
    }
    twilio = settings.twilio
    if twilio.configured and (twilio.sms_from or twilio.messaging_service_sid):
        channels[ChannelName.sms] = TwilioChannel(twilio, channel=ChannelName.sms)
    if twilio.configured and (twilio.whatsapp_from or twilio.messaging_service_sid):
        channels[ChannelName.whatsapp_twilio] = TwilioChannel(
            twilio, channel=ChannelName.whatsapp_twilio
        )
    sandboxed = sorted(name.value for name, client in channels.items() if client is None)
    if sandboxed:
        log.info("sandboxed channels (no credentials): %s", ", ".join(sandboxed))
    return channels


async def ensure_schedules(client: Client, settings: Settings) -> None:
    """Create or update the poll schedule so that a settings change takes effect on restart."""
    schedule_id = schedule_id_for("reamaze", settings.temporal.task_queue)
    if not settings.reamaze.configured:
        # Credentials were removed: a schedule left behind would only fail every interval.
        try:
            await client.get_schedule_handle(schedule_id).delete()
            log.info("deleted schedule %s: Re:amaze is not configured", schedule_id)
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
        return
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            HelpdeskPoll.run,
            PollInput(
                trigger_tag=settings.reamaze.trigger_tag,
                waits=settings.followup.waits,
                remove_tag_on_finish=settings.reamaze.remove_tag_on_finish,
            ),
            id=f"{schedule_id}:run",
            task_queue=settings.temporal.task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=settings.reamaze.poll_interval)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(schedule_id, schedule, trigger_immediately=True)
        log.info("created schedule %s every %s", schedule_id, settings.reamaze.poll_interval)
    except ScheduleAlreadyRunningError:
        handle = client.get_schedule_handle(schedule_id)

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await handle.update(replace)


DATABASE_THREADS = 32
"""Activities reach the database through ``asyncio.to_thread``; the default pool (cores + 4)
would queue hundreds of concurrent sequences behind a handful of threads."""


def widen_thread_pool() -> None:
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(DATABASE_THREADS))


async def run_worker(settings: Settings, *, client: Client | None = None) -> None:
    widen_thread_pool()
    store = Store.from_url(settings.database_url)
    client = client or await connect(settings)
    try:
        async with build_activities(settings, store) as activities:
            try:
                await asyncio.wait_for(
                    ensure_search_attributes(client, settings.temporal.namespace), timeout=15
                )
            except (RPCError, TimeoutError) as error:
                # e.g. no operator permission: the cluster registers them out of band
                log.warning("could not check the search attributes: %s", error)
            await ensure_schedules(client, settings)
            worker = Worker(
                client,
                task_queue=settings.temporal.task_queue,
                workflows=list(WORKFLOWS),
                activities=activities.all(),
                max_concurrent_activities=200,
                workflow_task_poller_behavior=PollerBehaviorAutoscaling(),
                activity_task_poller_behavior=PollerBehaviorAutoscaling(),
            )
            log.info(
                "worker on task queue %s at %s",
                settings.temporal.task_queue,
                settings.temporal.address,
            )
            await worker.run()
    finally:
        store.close()


def main() -> None:
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    asyncio.run(run_worker(settings))


if __name__ == "__main__":
    main()
