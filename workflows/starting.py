"""How a workflow is started, besides its input: its id, id-reuse policy, search attributes and
summary. Each workflow module has one function that builds them, so the API, a schedule, a
parent workflow, the benchmarks and the tests all start it the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from temporalio.common import TypedSearchAttributes, WorkflowIDReusePolicy

SUMMARY_LIMIT = 200
"""The Web UI shows a summary on one line."""


@dataclass(frozen=True)
class WorkflowStart:
    id: str
    search_attributes: TypedSearchAttributes
    summary: str
    """Without personal data: ids, not addresses (the Web UI and its lists show it to anyone
    who can see the namespace)."""
    id_reuse_policy: WorkflowIDReusePolicy = WorkflowIDReusePolicy.ALLOW_DUPLICATE

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``Client.start_workflow`` and ``workflow.start_child_workflow``."""
        return {
            "id": self.id,
            "id_reuse_policy": self.id_reuse_policy,
            "search_attributes": self.search_attributes,
            "static_summary": self.summary[:SUMMARY_LIMIT],
        }
