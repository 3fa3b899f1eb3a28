"""The one worker: every workflow and activity of Nudge on one task queue.

``nudge worker`` runs it (``nudge dev`` beside the HTTP service). The clients for the outside
world are built here, from the settings, and injected into the activity classes; the clients
themselves (``integrations/``) take plain arguments and never read settings. Tests and
benchmarks build their worker with the same ``build_activities`` and ``build_worker``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from ssl import SSLContext
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

from activities.automations import AutomationActivities
from activities.delivery import DeliveryActivities
from activities.followup_config import load_followup_texts
from activities.helpdesk import HelpdeskActivities
from activities.menus import MenuActivities
from activities.scheduled_followups import ScheduledFollowUpActivities
from activities.writer import WriterActivities
from domain.channels import ChannelName
from domain.durations import format_duration
from integrations.channels import Channel
from integrations.email_smtp import SmtpChannel
from integrations.fcm import FcmChannel
from integrations.llm import GeminiGenerator, OpenAIGenerator, TextGenerator
from integrations.reamaze import ReamazeClient
from integrations.support_board import SupportBoardChannel
from integrations.twilio_channel import TwilioChannel
from integrations.webhooks import WebhookClient
from integrations.whatsapp_cloud import WhatsAppCloudChannel
from links import secret_key, unsubscribe_links
from settings import (
    FcmSettings,
    ReamazeSettings,
    Settings,
    SmtpSettings,
    SupportBoardSettings,
    TwilioSettings,
    WhatsAppSettings,
    get_settings,
)
from store.repo import Store
from temporal_client import connect, ensure_search_attributes
from workflows.automation_run import AutomationRun
from workflows.booking_reminder import BookingReminder
from workflows.contact_watch import ContactWatch
from workflows.helpdesk_followup import HelpdeskFollowUp
from workflows.helpdesk_poll import HelpdeskPoll, PollInput, schedule_id_for
from workflows.menu_conversation import MenuConversation
from workflows.scheduled_followup import ScheduledFollowUp
from workflows.send_message import SendMessage

log = logging.getLogger("nudge.worker")

WORKFLOWS: Sequence[type] = (
    HelpdeskFollowUp,
    HelpdeskPoll,
    SendMessage,
    MenuConversation,
    AutomationRun,
    ContactWatch,
    BookingReminder,
    ScheduledFollowUp,
)
MAX_CONCURRENT_ACTIVITIES = 200
RETIRED_MODEL_PREFIXES = ("gemini-1.0", "gemini-1.5", "gemini-pro")


# --- clients from settings ------------------------------------------------------------------


def reamaze_client(settings: ReamazeSettings) -> ReamazeClient:
    if not settings.configured:
        raise ValueError(
            "Re:amaze needs NUDGE_REAMAZE__BRAND (or __BASE_URL), __LOGIN_EMAIL and __API_TOKEN"
        )
    return ReamazeClient(
        settings.base_url,
        settings.login_email,
        settings.api_token.get_secret_value(),
        timeout=settings.timeout.total_seconds(),
    )


def smtp_channel(settings: SmtpSettings, *, tls_context: SSLContext | None = None) -> SmtpChannel:
    try:
        return SmtpChannel(
            settings.host,
            settings.from_,
            port=settings.port,
            username=settings.username,
            password=settings.password.get_secret_value(),
            security=settings.security,
            timeout=settings.timeout.total_seconds(),
            tls_context=tls_context,
        )
    except ValueError as error:
        raise ValueError(f"NUDGE_SMTP__FROM: {error}") from error


def twilio_channel(
    settings: TwilioSettings, channel: ChannelName = ChannelName.sms, *, timeout: float = 30.0
) -> TwilioChannel:
    if not settings.configured:
        raise ValueError("Twilio needs NUDGE_TWILIO__ACCOUNT_SID and NUDGE_TWILIO__AUTH_TOKEN")
    if channel not in (ChannelName.sms, ChannelName.whatsapp_twilio):
        raise ValueError(f"Twilio sends sms and whatsapp_twilio, not {channel}")
    whatsapp = channel == ChannelName.whatsapp_twilio
    sender = settings.whatsapp_from if whatsapp else settings.sms_from
    if not (sender or settings.messaging_service_sid):
        variable = "WHATSAPP_FROM" if whatsapp else "SMS_FROM"
        raise ValueError(
            f"Twilio {channel} needs NUDGE_TWILIO__{variable} or NUDGE_TWILIO__MESSAGING_SERVICE_SID"
        )
    return TwilioChannel(
        settings.account_sid,
        settings.auth_token.get_secret_value(),
        channel,
        sender=sender,
        messaging_service_sid=settings.messaging_service_sid,
        base_url=settings.base_url,
        timeout=timeout,
    )


def whatsapp_channel(settings: WhatsAppSettings, *, timeout: float = 20.0) -> WhatsAppCloudChannel:
    if not settings.configured:
        raise ValueError(
            "WhatsApp Cloud needs NUDGE_WHATSAPP__TOKEN and NUDGE_WHATSAPP__PHONE_NUMBER_ID"
        )
    return WhatsAppCloudChannel(
        settings.token.get_secret_value(),
        settings.phone_number_id,
        graph_url=settings.graph_url,
        api_version=settings.api_version,
        timeout=timeout,
    )


def fcm_channel(settings: FcmSettings, *, timeout: float = 20.0) -> FcmChannel:
    if settings.credentials_file is None:
        raise ValueError("NUDGE_FCM__CREDENTIALS_FILE is not set: give the service-account file")
    try:
        return FcmChannel(
            settings.credentials_file,
            project_id=settings.project_id,
            base_url=settings.base_url,
            timeout=timeout,
        )
    except ValueError as error:
        raise ValueError(
            f"NUDGE_FCM__CREDENTIALS_FILE: {error} (NUDGE_FCM__PROJECT_ID names the project)"
        ) from error


def support_board_channel(
    settings: SupportBoardSettings, *, timeout: float = 20.0
) -> SupportBoardChannel:
    if not settings.configured:
        raise ValueError(
            "Support Board needs NUDGE_SUPPORT_BOARD__URL (the include/api.php URL) "
            "and NUDGE_SUPPORT_BOARD__TOKEN (an admin token)"
        )
    return SupportBoardChannel(
        settings.url,
        settings.token.get_secret_value(),
        bot_user_id=settings.bot_user_id,
        timeout=timeout,
    )


def build_generator(settings: Settings) -> TextGenerator | None:
    """None means "no LLM": the writer then always sends the configured fallback texts."""
    provider = settings.llm_provider
    if provider == "gemini":
        if not settings.gemini.api_key.get_secret_value():
            raise ValueError(
                "the LLM provider is gemini but no key is set: "
                "set GOOGLE_API_KEY, GEMINI_API_KEY or NUDGE_GEMINI__API_KEY"
            )
        return GeminiGenerator(
            settings.gemini.api_key.get_secret_value(),
            settings.gemini.model,
            base_url=settings.gemini.base_url,
            thinking_budget=settings.gemini.thinking_budget,
            thinking_level=settings.gemini.thinking_level,
        )
    if provider == "openai":
        if not settings.openai.api_key.get_secret_value():
            raise ValueError(
                "the LLM provider is openai but no key is set: set NUDGE_OPENAI__API_KEY"
            )
        return OpenAIGenerator(
            settings.openai.api_key.get_secret_value(),
            settings.openai.model,
            base_url=settings.openai.base_url,
        )
    return None


def _llm(settings: Settings, config_model: str | None) -> TextGenerator | None:
    """The original script's config.json may name a Gemini model; honour it unless retired."""
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


def channels_configured(settings: Settings) -> dict[ChannelName, bool]:
    """Which channels have their credentials; the others are sandboxed (recorded, not sent),
    as ``nudge dev`` says when it starts."""
    twilio = settings.twilio

    def twilio_sends(sender: str) -> bool:
        return twilio.configured and bool(sender or twilio.messaging_service_sid)

    return {
        ChannelName.email: settings.smtp.configured,
        ChannelName.sms: twilio_sends(twilio.sms_from),
        ChannelName.whatsapp: settings.whatsapp.configured,
        ChannelName.whatsapp_twilio: twilio_sends(twilio.whatsapp_from),
        ChannelName.push: settings.fcm.configured,
        ChannelName.support_board: settings.support_board.configured,
        ChannelName.reamaze: settings.reamaze.configured,
    }


def build_channels(settings: Settings) -> dict[ChannelName, Channel | None]:
    """Every channel with credentials gets its client; the others are sandboxed (None)."""
    builders: dict[ChannelName, Callable[[], Channel]] = {
        ChannelName.email: lambda: smtp_channel(settings.smtp),
        ChannelName.sms: lambda: twilio_channel(settings.twilio, ChannelName.sms),
        ChannelName.whatsapp: lambda: whatsapp_channel(settings.whatsapp),
        ChannelName.whatsapp_twilio: lambda: twilio_channel(
            settings.twilio, ChannelName.whatsapp_twilio
        ),
        ChannelName.push: lambda: fcm_channel(settings.fcm),
        ChannelName.support_board: lambda: support_board_channel(settings.support_board),
        ChannelName.reamaze: lambda: reamaze_client(settings.reamaze),
    }
    configured = channels_configured(settings)
    channels = {name: build() if configured[name] else None for name, build in builders.items()}
    sandboxed = sorted(name.value for name, client in channels.items() if client is None)
    if sandboxed:
        log.info("sandboxed channels (no credentials): %s", ", ".join(sandboxed))
    return channels


# --- activities and the worker --------------------------------------------------------------


@dataclass
class Activities:
    helpdesk: HelpdeskActivities
    writer: WriterActivities
    delivery: DeliveryActivities
    menus: MenuActivities
    automations: AutomationActivities
    scheduled: ScheduledFollowUpActivities

    def all(self) -> list[Callable[..., Any]]:
        return [
            *self.menus.all(),
            *self.automations.all(),
            *self.scheduled.all(),
            self.writer.write_message,
            self.delivery.deliver,
            self.delivery.check_contact_policy,
            self.delivery.post_helpdesk_reply,
            self.helpdesk.find_tagged_conversations,
            self.helpdesk.read_conversation,
            self.helpdesk.remove_trigger_tag,
            self.helpdesk.record_outcome,
            self.writer.write_followup,
        ]


@asynccontextmanager
async def build_activities(settings: Settings, store: Store) -> AsyncIterator[Activities]:
    """The activities with their clients, which are closed on leaving."""
    texts = load_followup_texts(settings.followup.config_file)
    generator = _llm(settings, texts.model)
    channels = build_channels(settings)
    webhooks = WebhookClient()
    reamaze = channels[ChannelName.reamaze]
    if reamaze is None:
        log.warning("Re:amaze is not configured: no poll schedule, and follow-ups cannot read")
    try:
        yield Activities(
            helpdesk=HelpdeskActivities(
                reamaze if isinstance(reamaze, ReamazeClient) else None,
                store,
                login_email=settings.reamaze.login_email,
                purchase_indicators=settings.followup.purchase_indicators,
                history_messages=settings.followup.history_messages,
            ),
            writer=WriterActivities(generator, texts, max_chars=settings.followup.max_chars),
            delivery=DeliveryActivities(
                channels,
                store,
                settings.policy,
                unsubscribe_url=unsubscribe_links(settings),
                status_callback=f"{settings.public_url.rstrip('/')}/webhooks/twilio/status",
                in_flight_grace=settings.delivery.in_flight_grace,
            ),
            menus=MenuActivities(store),
            automations=AutomationActivities(store, webhooks),
            scheduled=ScheduledFollowUpActivities(store),
        )
    finally:
        await webhooks.aclose()
        for channel in channels.values():
            if channel is not None:
                await channel.aclose()
        close = getattr(generator, "aclose", None)
        if close is not None:
            await close()


def build_worker(
    client: Client,
    settings: Settings,
    activities: Sequence[Callable[..., Any]],
    **options: Any,
) -> Worker:
    """Every workflow and the given activities on the settings' task queue; ``options`` are
    passed on to ``Worker`` (a benchmark's concurrency limits, say)."""
    defaults: dict[str, Any] = {
        "max_cached_workflows": settings.temporal.max_cached_workflows,
        "max_concurrent_activities": MAX_CONCURRENT_ACTIVITIES,
        "workflow_task_poller_behavior": PollerBehaviorAutoscaling(),
        "activity_task_poller_behavior": PollerBehaviorAutoscaling(),
    }
    return Worker(
        client,
        task_queue=settings.temporal.task_queue,
        workflows=list(WORKFLOWS),
        activities=list(activities),
        **{**defaults, **options},
    )


async def ensure_schedules(client: Client, settings: Settings) -> None:
    """Create or update the poll schedule so that a settings change takes effect on restart."""
    schedule_id = schedule_id_for(task_queue=settings.temporal.task_queue)
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
        log.info(
            "created schedule %s every %s",
            schedule_id,
            format_duration(settings.reamaze.poll_interval),
        )
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
    secret_key(settings)  # links made here must open in the HTTP service: fail before starting
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
            worker = build_worker(client, settings, activities.all())
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
