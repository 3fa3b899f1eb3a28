"""The custom search attributes every Nudge workflow sets, so operators find runs in the Web UI.

``nudge dev`` registers them on its dev server; docker-compose registers them on the cluster.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

NUDGE_KIND = SearchAttributeKey.for_keyword("NudgeKind")
NUDGE_STATUS = SearchAttributeKey.for_keyword("NudgeStatus")
CONTACT_ID = SearchAttributeKey.for_keyword("ContactId")
CHANNEL = SearchAttributeKey.for_keyword("Channel")

ALL = (NUDGE_KIND, NUDGE_STATUS, CONTACT_ID, CHANNEL)


def at_start(
    kind: str, status: str, channel: str, *, contact_id: int | None = None
) -> TypedSearchAttributes:
    """The attributes a run carries from its first moment, so the Web UI can filter it at once
    (and ``GET /v1/contacts/{id}/next`` find it by ``ContactId``, when the contact is known)."""
    pairs: list[SearchAttributePair[str]] = [
        SearchAttributePair(NUDGE_KIND, kind),
        SearchAttributePair(NUDGE_STATUS, status),
        SearchAttributePair(CHANNEL, channel),
    ]
    if contact_id is not None:
        pairs.append(SearchAttributePair(CONTACT_ID, str(contact_id)))
    return TypedSearchAttributes(pairs)
