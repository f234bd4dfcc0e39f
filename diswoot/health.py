"""Liveness/readiness of the daemon, as reported by ``GET /health`` and sd_notify STATUS=."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from diswoot.gateway.events import GatewayStatus


@dataclass
class Health:
    """Shared, mutable view of what the daemon knows about itself."""

    gateway: GatewayStatus
    chatwoot_reachable: bool | None = None  # None: not probed yet
    chatwoot_checked_at: float | None = None
    chatwoot_error: str | None = None
    started_at: float = field(default_factory=time.time)
    queue_depths: Callable[[], dict[str, dict[str, Any]]] = lambda: {}
    stopping: bool = False
    on_change: Callable[[], None] | None = None  # e.g. refresh the systemd STATUS= line

    def report_chatwoot_failure(self, error: str, now: float) -> bool:
        """Record a failed Chatwoot call seen on the hot path; True if that is news."""
        was = self.chatwoot_reachable
        self.chatwoot_reachable, self.chatwoot_checked_at, self.chatwoot_error = False, now, error
        if was is not False and self.on_change is not None:
            self.on_change()
        return was is not False

    def snapshot(self, now: float | None = None) -> tuple[bool, dict[str, Any]]:
        """(ready, JSON body).  Ready = gateway session up, Chatwoot reachable, not stopping."""
        now = time.time() if now is None else now
        queues = self.queue_depths()
        oldest = [
            q["oldest_pending_age_seconds"]
            for q in queues.values()
            if q.get("oldest_pending_age_seconds") is not None
        ]
        gateway_ok = self.gateway.state == "ready"
        chatwoot_ok = self.chatwoot_reachable is not False
        ready = gateway_ok and chatwoot_ok and not self.stopping
        body: dict[str, Any] = {
            "status": "ok" if ready else "degraded",
            "live": True,
            "ready": ready,
            "uptime_seconds": round(now - self.started_at, 3),
            "gateway": {
                "state": self.gateway.state,
                "user": self.gateway.user_tag,
                "connects": self.gateway.connects,
                "resumes": self.gateway.resumes,
                "reconnects": self.gateway.reconnects,
                "identify_remaining": self.gateway.identify_remaining,
                "heartbeat_latency_seconds": self.gateway.last_ack_latency,
            },
            "chatwoot": {
                "reachable": self.chatwoot_reachable,
                "checked_at": self.chatwoot_checked_at,
                "error": self.chatwoot_error,
            },
            "queues": queues,
            "oldest_pending_age_seconds": max(oldest) if oldest else None,
            "stopping": self.stopping,
        }
        return ready, body
