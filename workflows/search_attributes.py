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


def at_start(kind: str, status: str, channel: str) -> TypedSearchAttributes:
    """The attributes a run carries from its first moment, so the Web UI can filter it at once."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(NUDGE_KIND, kind),
            SearchAttributePair(NUDGE_STATUS, status),
            SearchAttributePair(CHANNEL, channel),
        ]
    )
