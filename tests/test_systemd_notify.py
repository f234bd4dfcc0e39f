"""diswoot.systemd against real AF_UNIX datagram sockets, the way systemd listens."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from diswoot import systemd


class NotifyListener:
    """A datagram socket standing in for systemd's notification socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def received(self) -> list[str]:
        """Every datagram queued so far (non-blocking)."""
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode("utf-8"))
            except BlockingIOError:
                return out


def _listen(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setblocking(False)
    return sock


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyListener]:
    """A path socket in tmp_path, announced through $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    with _listen(str(path)) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield NotifyListener(sock)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


def test_notify_path_socket(listener: NotifyListener) -> None:
    assert systemd.notify("STATUS=hello")
    assert listener.received() == ["STATUS=hello"]


def test_notify_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"diswoot-test-{uuid.uuid4().hex}"
    with _listen("\0" + name) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("WATCHDOG=1")
        assert NotifyListener(sock).received() == ["WATCHDOG=1"]


def test_notify_without_socket_is_a_no_op() -> None:
    assert systemd.notify("READY=1") is False


@pytest.mark.parametrize("address", ["/nonexistent/diswoot/notify", "vsock:2:9999"])
def test_notify_errors_are_logged_not_raised(
    address: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    with caplog.at_level(logging.DEBUG, logger="diswoot.systemd"):
        assert systemd.notify("READY=1") is False
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


def test_ready_and_stopping_messages(listener: NotifyListener) -> None:
    assert systemd.ready()
    assert systemd.stopping()
    assert listener.received() == [f"READY=1\nMAINPID={os.getpid()}", "STOPPING=1"]


def test_status_reporter_sends_only_on_change(listener: NotifyListener) -> None:
    status = systemd.StatusReporter()
    status.update(discord="connecting to Discord")
    status.update(discord="connecting to Discord")
    status.update(discord="ready as bot#1234", chatwoot="Chatwoot ok", queued=0)
    status.update(queued=0)
    status.update(chatwoot="Chatwoot unreachable", queued=3)
    status.update(discord=None)
    assert listener.received() == [
        "STATUS=connecting to Discord",
        "STATUS=ready as bot#1234 · Chatwoot ok · queued 0",
        "STATUS=ready as bot#1234 · Chatwoot unreachable · queued 3",
        "STATUS=Chatwoot unreachable · queued 3",
    ]


def test_status_text_stays_on_one_line(listener: NotifyListener) -> None:
    status = systemd.StatusReporter()
    status.update(discord="resuming\nafter  a drop", events_seen=5)
    assert status.text == "resuming after a drop · events seen 5"
    assert listener.received() == ["STATUS=resuming after a drop · events seen 5"]


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("1000", None, 0.0005),
        ("30000000", "1", None),
        ("30000000", "not-a-pid", None),
        (None, None, None),
        ("", None, None),
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval(
    usec: str | None, pid: str | None, expected: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)
    assert systemd.watchdog_interval() == expected


async def test_watchdog_pings_on_cadence_until_stopped(
    listener: NotifyListener,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")  # interval = 10 s
    stop = trio.Event()
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(systemd.watchdog_task, stop)
            await trio.sleep(1)
            assert listener.received() == ["WATCHDOG=1"]  # at once
            await trio.sleep(8.9)  # t = 9.9
            assert listener.received() == []
            await trio.sleep(0.2)  # t = 10.1
            assert listener.received() == ["WATCHDOG=1"]
            await trio.sleep(20)  # t = 30.1: pings at 20 and 30
            assert listener.received() == ["WATCHDOG=1"] * 2
            stop.set()
            stopped_at = trio.current_time()
        assert trio.current_time() == stopped_at  # returned without waiting out the interval
    assert listener.received() == []


async def test_watchdog_explicit_interval(
    listener: NotifyListener, autojump_clock: trio.testing.MockClock
) -> None:
    stop = trio.Event()
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(systemd.watchdog_task, stop, interval=3))
            await trio.sleep(10)  # pings at 0, 3, 6 and 9 virtual seconds
            stop.set()
    assert listener.received() == ["WATCHDOG=1"] * 4


async def test_watchdog_without_configuration_returns_at_once(listener: NotifyListener) -> None:
    with trio.fail_after(1):
        await systemd.watchdog_task(trio.Event())
    assert listener.received() == []
