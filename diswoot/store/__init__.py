"""Durable state: SQLite behind ``trio.to_thread``."""

from diswoot.store.db import Store, open_store
from diswoot.store.models import Conversation, CsatResponse, Job, Link, QueueStats, User

__all__ = [
    "Conversation",
    "CsatResponse",
    "Job",
    "Link",
    "QueueStats",
    "Store",
    "User",
    "open_store",
]
