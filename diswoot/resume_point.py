"""Where a restart RESUMEs the gateway session: loaded at start, saved while running and at the end.

The session is saved every few seconds, and only while the router has handled everything the
gateway handed it (:class:`~diswoot.bridge.router.Intake`): after a crash, a SIGKILL or a
watchdog restart the next start RESUMEs and Discord replays what came meanwhile, including a
new user's first DM, which no backfill could find.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import trio

from diswoot.bridge.router import Intake
from diswoot.gateway.events import GatewayStatus, SessionState
from diswoot.store import Store
from diswoot.store import queries as q

log = logging.getLogger("diswoot.service")

SESSION_KEY = "gateway_session"
SAVE_EVERY = 2.0
"""Seconds between saves while running (a save writes only when the session moved on)."""


async def load_session(store: Store) -> SessionState:
    """The session saved by the previous run (anything unusable in it is ignored)."""
    saved = await store.call(q.get_value, SESSION_KEY)
    saved = saved if isinstance(saved, dict) else {}
    session_id, seq = saved.get("session_id"), saved.get("seq")
    resume_url, user_id = saved.get("resume_url"), saved.get("user_id")
    if not (isinstance(session_id, str) and isinstance(seq, int)):
        session_id, seq = None, None
    return SessionState(
        session_id=session_id,
        seq=seq,
        resume_url=resume_url if isinstance(resume_url, str) else None,
        user_id=user_id if isinstance(user_id, str) else None,
    )


class ResumePoint:
    """Saves ``session`` once the router has handled every event handed to it."""

    def __init__(
        self,
        store: Store,
        session: SessionState,
        intake: Intake,
        gateway: GatewayStatus,
    ) -> None:
        self._store = store
        self._session = session
        self._intake = intake
        self._gateway = gateway
        self._saved: dict[str, Any] | None = None

    def _value(self) -> dict[str, Any]:
        s = self._session
        return {
            "session_id": s.session_id,
            "seq": s.seq,
            "resume_url": s.resume_url,
            "user_id": s.user_id,
        }

    async def save(self, *, quiet: bool = False) -> bool:
        """Save the session unless the router has not handled every event handed to it: then
        the session saved before stays, and the next start resumes from there (the replay is
        deduplicated) or starts afresh and fetches the DMs it missed.  True when stored."""
        if not self._intake.all_handled(self._gateway):
            if not quiet:
                log.warning(
                    "the gateway session is not saved: DMs it received are not all stored yet; "
                    "the next start resumes from an earlier point or fetches what it missed"
                )
            return False
        value = self._value()
        if value != self._saved:
            await self._store.call(q.set_value, SESSION_KEY, value)
            self._saved = value
        return True

    async def keep_saved(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Save every :data:`SAVE_EVERY` seconds while the session is resumable (forever; the
        daemon cancels it at shutdown and saves once more after the router drained).  A store
        that refuses the write (a full disk) leaves the earlier save: tried again next time."""
        task_status.started()
        failing = False
        while True:
            await trio.sleep(SAVE_EVERY)
            if not self._session.resumable:
                continue
            try:
                await self.save(quiet=True)
            except (OSError, sqlite3.OperationalError) as exc:
                if not failing:
                    log.warning("could not save the gateway session (%s); trying again", exc)
                failing = True
            else:
                failing = False
