"""systemd integration without libsystemd: ``sd_notify`` datagrams, the watchdog, STATUS= lines.

Everything here is a no-op outside systemd (``$NOTIFY_SOCKET`` unset), so the daemon runs the
same way from a shell, in tests and under ``Type=notify``.
"""

from __future__ import annotations

import logging
import os
import socket

import trio

log = logging.getLogger(__name__)

STATUS_SEPARATOR = " · "


def notify(message: str) -> bool:
    """Send one datagram to ``$NOTIFY_SOCKET``; True if it was sent.

    A leading ``@`` names an abstract socket.  Unset variable: nothing happens.  Send errors are
    logged at debug level and never raised; the socket is non-blocking so the trio loop never
    waits on systemd.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.debug("unsupported NOTIFY_SOCKET address %r", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(message.encode("utf-8"), address)
    except OSError as exc:
        log.debug("sd_notify %r failed: %s", message.split("=", 1)[0], exc)
        return False
    return True


def ready() -> bool:
    """Tell systemd that start-up finished (``Type=notify`` makes ``systemctl start`` wait)."""
    return notify(f"READY=1\nMAINPID={os.getpid()}")


def stopping() -> bool:
    """Tell systemd that a clean shutdown has begun."""
    return notify("STOPPING=1")


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or None if not asked.

    ``$WATCHDOG_PID``, when set, must be this process: a child that inherited the variables of
    its parent must not ping for it.
    """
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2_000_000


async def watchdog_task(stop: trio.Event, *, interval: float | None = None) -> None:
    """Ping the watchdog from the trio loop every ``interval`` seconds until ``stop`` is set.

    Because the pings come from the loop itself, a loop that stops running (blocked by sync code,
    a deadlock) stops pinging and systemd restarts the service.  Returns at once when no watchdog
    is configured.
    """
    if interval is None:
        interval = watchdog_interval()
    if interval is None:
        return
    while not stop.is_set():
        notify("WATCHDOG=1")
        with trio.move_on_after(interval):
            await stop.wait()


class StatusReporter:
    """Keeps named parts of the ``STATUS=`` line shown by ``systemctl status``.

    ``update(discord="ready as bot#1234", chatwoot="Chatwoot ok", queued=0)`` shows
    ``ready as bot#1234 · Chatwoot ok · queued 0``: text parts appear as given, numbers as
    ``<name> <n>``, ``None`` removes a part.  Parts keep the order in which they first appeared.
    A datagram is sent only when the text changes.
    """

    def __init__(self) -> None:
        self._parts: dict[str, str | int] = {}
        self._sent: str | None = None

    @property
    def text(self) -> str:
        """The current status line."""
        shown = []
        for name, value in self._parts.items():
            if isinstance(value, int):
                shown.append(f"{name.replace('_', ' ')} {value}")
            else:
                shown.append(value)
        return STATUS_SEPARATOR.join(shown)

    def update(self, **parts: str | int | None) -> None:
        """Set (or with None remove) parts and send ``STATUS=`` if the line changed."""
        for name, value in parts.items():
            if value is None:
                self._parts.pop(name, None)
            else:
                self._parts[name] = " ".join(value.split()) if isinstance(value, str) else value
        text = self.text
        if text != self._sent:
            self._sent = text
            notify(f"STATUS={text}")


__all__ = [
    "StatusReporter",
    "notify",
    "ready",
    "stopping",
    "watchdog_interval",
    "watchdog_task",
]
