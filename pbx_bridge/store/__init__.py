"""The call store: finished calls, QA tags and floor history, kept for reports and QA.

``schema`` holds the versioned SQLite schema, ``model`` the types queries take and return,
``sqlite`` the store itself (:class:`~pbx_bridge.store.sqlite.SqliteStore`).
"""

from __future__ import annotations

from pbx_bridge.store.model import (
    AgentStateInterval,
    CallFilter,
    Complaint,
    OpenMarker,
    StoreStats,
    UnansweredCall,
)
from pbx_bridge.store.sqlite import SqliteStore

__all__ = [
    "AgentStateInterval",
    "CallFilter",
    "Complaint",
    "OpenMarker",
    "SqliteStore",
    "StoreStats",
    "UnansweredCall",
]
