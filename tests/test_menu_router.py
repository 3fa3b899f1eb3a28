"""MenuRouter when Temporal falters, shown with a scripted Temporal client."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from temporalio.service import RPCError, RPCStatusCode

from integrations.channels import ChannelName
from settings import MenusSettings, Settings, TemporalSettings
from starter.inbound import handle_inbound
from starter.menu_routing import MenuRouter, RoutedMessage
from store.repo import Store
from workflows.menu_payloads import MenuMessage

PHONE = "+15551230001"


class _NoConversation:
    async def signal(self, name: str, *args: Any) -> None:
        raise RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b"")


class FlakyTemporal:
    """No conversation is running; the first ``start_workflow`` finds Temporal unavailable
    (a restart), the next ones work."""

    def __init__(self, failures: int = 1) -> None:
        self.failures = failures
        self.started: list[str] = []

    def get_workflow_handle(self, workflow_id: str) -> _NoConversation:
        return _NoConversation()

    async def start_workflow(self, *args: Any, **kwargs: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")
        self.started.append(kwargs["id"])


async def test_fallback_reply_survives_a_temporal_blip(store: Store) -> None:
    """``_fallback`` claims the contact's once-per-period slot in the database *before* it
    starts the SendMessage workflow. When Temporal is briefly unavailable, ``_after`` retries
    the whole ``route`` (that is what RETRY_DELAYS are for), but the retry finds the slot
    already claimed and answers "ignored": the fallback reply is never sent, and the claim
    keeps the customer from getting one for the whole period (24 h by default). A message
    is lost silently although routing was retried precisely to survive the blip.

    Right: the retried routing still sends the fallback (claim and start together, or
    release/reuse the claim when the start fails).
    """
    temporal = FlakyTemporal(failures=1)

    async def client() -> Any:
        return temporal

    settings = Settings(
        _env_file=None,
        temporal=TemporalSettings(task_queue="tq-review"),
        menus=MenusSettings(fallback_text="Thanks! Say hi for our menu.", fallback_period="1h"),
    )
    router = MenuRouter(settings, store, client)
    now = datetime.now(UTC)
    inbound = await handle_inbound(
        store, "whatsapp", "wamid.blip", PHONE, text="opening hours?", received_at=now
    )
    assert inbound is not None
    routed = RoutedMessage(
        ChannelName.whatsapp,
        inbound.address,
        inbound.contact_id,
        MenuMessage("wamid.blip", "opening hours?", None, now),
        inbound.keyword,
    )
    outcome = await router.submit(routed)
    assert outcome == "fallback", f"routing answered {outcome!r} after one retry"
    assert len(temporal.started) == 1
