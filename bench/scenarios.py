"""The measured scenarios: inbound bursts and paced DMs, outbound webhook bursts.

Every scenario returns a flat dict of JSON-able figures (see ``report.TABLE_ROWS``).  Times are
``time.perf_counter()`` in this process: a DM is "dispatched" when FakeDiscord puts it on the
gateway and "received" when FakeChatwoot's request log records the POST carrying its
``source_id``; an agent reply is "sent" when its signed webhook POST starts and "received" when
FakeDiscord records the successful create-message request carrying its text.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import trio

from bench.procstat import cpu_seconds
from bench.report import latency_summary, rounded
from bench.world import TimedLog, World
from diswoot.testing.fake_chatwoot import INCOMING, rails_json

DISCORD_GLOBAL_LIMIT = 50
DRAIN_TIMEOUT = 120.0
POLL = 0.002


class Request(Protocol):
    """What both fakes record about a request."""

    method: str
    json: Any
    status: int


R = TypeVar("R", bound=Request)


@dataclass
class Receipts(Generic[R]):
    """When each expected item first reached a fake in a request that succeeded."""

    key: Callable[[R], str | None]
    expected: Collection[str]
    at: dict[str, float] = field(default_factory=dict)
    attempts: Counter[str] = field(default_factory=Counter)
    _pending: list[tuple[R, str, float]] = field(default_factory=list)

    def listen(self, record: R, now: float) -> None:
        name = self.key(record)
        if name is not None and name in self.expected:
            self.attempts[name] += 1
            self._pending.append((record, name, now))

    def settle(self) -> None:
        """Keep the arrivals whose answer was a success (a 429'd attempt does not count)."""
        waiting = []
        for record, name, now in self._pending:
            if record.status == 0:
                waiting.append((record, name, now))
            elif 200 <= record.status < 300 and name not in self.at:
                self.at[name] = now
        self._pending = waiting

    async def wait_all(self) -> None:
        """Return once every expected item arrived (the caller bounds the wait)."""
        while True:
            self.settle()
            if len(self.at) >= len(self.expected):
                return
            await trio.sleep(POLL)

    async def wait_all_within(self, seconds: float) -> bool:
        """:meth:`wait_all`, giving up after ``seconds``; True if everything arrived."""
        with trio.move_on_after(seconds):
            await self.wait_all()
        self.settle()
        return len(self.at) >= len(self.expected)


@dataclass
class Snapshot:
    """Counters of the world at one instant."""

    at: float
    daemon_cpu: float
    bench_cpu: float
    chatwoot_requests: int
    discord_requests: int
    responses_429: int
    bucket_overruns: int
    webhooks: int

    @classmethod
    def take(cls, world: World) -> Snapshot:
        return cls(
            at=time.perf_counter(),
            daemon_cpu=cpu_seconds(world.pid),
            bench_cpu=cpu_seconds(),
            chatwoot_requests=len(world.chatwoot_log),
            discord_requests=len(world.discord_log),
            responses_429=world.discord.responses_429,
            bucket_overruns=world.discord.bucket_violations + world.discord.global_violations,
            webhooks=len(world.chatwoot.webhook_deliveries) + world.posted_webhooks,
        )


def costs(before: Snapshot, after: Snapshot, messages: int) -> dict[str, Any]:
    """API calls, CPU and utilisation per message between two snapshots."""
    wall = max(after.at - before.at, 1e-9)
    daemon_cpu = after.daemon_cpu - before.daemon_cpu
    bench_cpu = after.bench_cpu - before.bench_cpu
    n = max(messages, 1)
    return {
        "chatwoot_calls_per_message": round(
            (after.chatwoot_requests - before.chatwoot_requests) / n, 3
        ),
        "discord_calls_per_message": round(
            (after.discord_requests - before.discord_requests) / n, 3
        ),
        "webhooks_per_message": round((after.webhooks - before.webhooks) / n, 3),
        "responses_429": after.responses_429 - before.responses_429,
        "bucket_overruns": after.bucket_overruns - before.bucket_overruns,
        "daemon_cpu_s": round(daemon_cpu, 3),
        "daemon_cpu_ms_per_message": round(daemon_cpu / n * 1000, 3),
        "daemon_cpu_util": round(daemon_cpu / wall, 3),
        "bench_cpu_util": round(bench_cpu / wall, 3),
        "bench_cpu_ms_per_message": round(bench_cpu / n * 1000, 2),
    }


def _source_id(record: Any) -> str | None:
    if record.method != "POST" or not str(record.path).endswith("/messages"):
        return None
    body = record.json
    value = body.get("source_id") if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


def _discord_content(record: Any) -> str | None:
    if record.method != "POST" or record.template != "/channels/{channel_id}/messages":
        return None
    body = record.json
    value = body.get("content") if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


def _round_robin(users: int, per_user: int) -> Iterator[tuple[int, int]]:
    """(user index, message number) in dispatch order: round-robin over the users."""
    for seq in range(per_user):
        for user in range(users):
            yield user, seq


async def inbound(
    world: World,
    users: Sequence[str],
    per_user: int,
    *,
    tag: str,
    rate: float | None = None,
    receipt_wait: float,
) -> dict[str, Any]:
    """``per_user`` DMs from each of ``users`` (round-robin), as fast as possible or at ``rate``/s.

    Checks exactly-once and per-user order against what FakeChatwoot stored, and counts the
    conversations created for these users.
    """
    total = len(users) * per_user
    dispatched: dict[str, tuple[int, int, float]] = {}  # discord id -> (user, seq, time)
    receipts: Receipts[Any] = Receipts(_source_id, dispatched)
    log: TimedLog[Any] = world.chatwoot_log
    conversations_before = len(world.chatwoot.conversations)
    log.listeners.append(receipts.listen)
    batches_before = await world.store_batches()
    before = Snapshot.take(world)
    try:
        start = trio.current_time()
        for index, (user, seq) in enumerate(_round_robin(len(users), per_user)):
            if rate is not None:
                await trio.sleep_until(start + index / rate)
            message = world.discord.user_sends(users[user], f"{tag} #{seq} from user {user}")
            dispatched[str(message["id"])] = (user, seq, time.perf_counter())
        complete = await receipts.wait_all_within(receipt_wait)
        window = Snapshot.take(world)
    finally:
        log.listeners.remove(receipts.listen)
    drain = await world.wait_drained_within(DRAIN_TIMEOUT)
    after = Snapshot.take(world)
    batches = await world.store_batches() - batches_before

    stored = [
        m
        for m in sorted(world.chatwoot.messages.values(), key=lambda m: m["id"])
        if m["message_type"] == INCOMING and m["source_id"] in dispatched
    ]
    per_source = Counter(m["source_id"] for m in stored)
    last_seq: dict[int, int] = {}
    order_kept = True
    for m in stored:
        user, seq, _ = dispatched[m["source_id"]]
        if seq <= last_seq.get(user, -1):
            order_kept = False
        last_seq[user] = seq
    user_ids = {f"discord:{u}" for u in users}
    contacts = {c["id"] for c in world.chatwoot.contacts.values() if c["identifier"] in user_ids}
    latencies = [receipts.at[k] - dispatched[k][2] for k in receipts.at]
    first = min(t for _, _, t in dispatched.values())
    last = max(receipts.at.values(), default=first)
    seconds = max(last - first, 1e-9)
    result: dict[str, Any] = {
        "kind": "inbound",
        "users": len(users),
        "messages": total,
        "offered_rate_per_s": rate,
        "complete": complete,
        "seconds": round(seconds, 3),
        "rate_per_s": round(len(receipts.at) / seconds, 1),
        **latency_summary(latencies),
        "order_kept": order_kept,
        "duplicates": sum(per_source.values()) - len(per_source),
        "missing": total - len(per_source),
        "post_attempts": sum(receipts.attempts.values()),
        "conversations_created": len(world.chatwoot.conversations) - conversations_before,
        "conversations_of_these_users": sum(
            1 for c in world.chatwoot.conversations.values() if c["contact_id"] in contacts
        ),
        "drain_seconds": rounded(drain),
        "store_transactions_per_message": round(batches / max(total, 1), 2),
    }
    # The CPU figures are the window: first dispatch to the last DM reaching Chatwoot
    # (the ✅ reactions still queued then are not in it); the same up to the drained queues is
    # kept as ``drained_*``.
    result.update(costs(before, window, total))
    drained = costs(before, after, total)
    for key in ("daemon_cpu_ms_per_message", "discord_calls_per_message", "webhooks_per_message"):
        result[f"drained_{key}"] = drained[key]
    return result


async def outbound(
    world: World,
    conversations: Sequence[int],
    replies: int,
    concurrency: int,
    *,
    tag: str,
    enforce_limits: bool,
    receipt_wait: float,
    rate: float | None = None,
) -> dict[str, Any]:
    """``replies`` agent replies (round-robin over ``conversations``) as signed webhooks:
    ``concurrency`` posters as fast as they can, or one every ``1/rate`` seconds."""
    chatwoot, discord = world.chatwoot, world.discord
    lost_from = len(chatwoot.lost_webhooks)
    for index, conversation_id in zip(range(replies), itertools.cycle(conversations)):
        await chatwoot.agent_reply(conversation_id, f"{tag} reply {index}", deliver=False)
    bodies = [
        (str(p["content"]), rails_json(p))
        for p in chatwoot.lost_webhooks[lost_from:]
        if p.get("event") == "message_created"
    ]
    sent: dict[str, float] = {}
    receipts: Receipts[Any] = Receipts(_discord_content, sent)
    outcomes: Counter[str] = Counter()
    pending = iter(bodies)

    async def post(content: str, body: bytes) -> None:
        sent[content] = time.perf_counter()
        response = await world.post_webhook(body)
        outcomes[str(response.json().get("outcome", response.status_code))] += 1

    async def poster() -> None:
        for content, body in pending:
            await post(content, body)

    async def paced(nursery: trio.Nursery, per_second: float) -> None:
        start = trio.current_time()
        for index, (content, body) in enumerate(pending):
            await trio.sleep_until(start + index / per_second)
            nursery.start_soon(post, content, body)

    discord.enforce_limits = enforce_limits
    log: TimedLog[Any] = world.discord_log
    log.listeners.append(receipts.listen)
    batches_before = await world.store_batches()
    before = Snapshot.take(world)
    first_index = len(log)
    try:
        async with trio.open_nursery() as nursery:
            if rate is not None:
                nursery.start_soon(paced, nursery, rate)
            else:
                for _ in range(concurrency):
                    nursery.start_soon(poster)
        complete = await receipts.wait_all_within(receipt_wait)
        window_end = len(log)
    finally:
        log.listeners.remove(receipts.listen)
    drain = await world.wait_drained_within(DRAIN_TIMEOUT)
    after = Snapshot.take(world)
    batches = await world.store_batches() - batches_before
    discord.enforce_limits = False

    first = min(sent.values(), default=before.at)
    last = max(receipts.at.values(), default=first)
    seconds = max(last - first, 1e-9)
    window = zip(log[first_index:window_end], log.stamps[first_index:window_end], strict=True)
    accepted = [t for record, t in window if record.status != 429 and first <= t <= last]
    discord_rate = len(accepted) / seconds
    delivered = [
        m["content"]
        for messages in discord.messages.values()
        for m in messages
        if m["author"]["id"] == discord.bot_user_id and m["content"] in sent
    ]
    per_content = Counter(delivered)
    result: dict[str, Any] = {
        "kind": "outbound",
        "conversations": len(conversations),
        "messages": len(bodies),
        "concurrency": concurrency,
        "enforce_limits": enforce_limits,
        "offered_rate_per_s": rate,
        "complete": complete,
        "webhook_outcomes": dict(outcomes),
        "seconds": round(seconds, 3),
        "rate_per_s": round(len(receipts.at) / seconds, 1),
        **latency_summary([receipts.at[k] - sent[k] for k in receipts.at]),
        "duplicates": sum(per_content.values()) - len(per_content),
        "missing": len(bodies) - len(per_content),
        "discord_req_per_s": round(discord_rate, 1),
        "global_limit_fraction": round(discord_rate / DISCORD_GLOBAL_LIMIT, 3),
        "drain_seconds": rounded(drain),
        "store_transactions_per_message": round(batches / max(len(bodies), 1), 2),
    }
    result.update(costs(before, after, len(bodies)))
    return result


def conversations_of(world: World, users: Sequence[str]) -> list[int]:
    """The newest Chatwoot conversation of each user (users without one are skipped)."""
    found = []
    for user in users:
        mine = world.chatwoot.conversation_for(f"discord:{user}")
        if mine:
            found.append(int(mine[-1]["id"]))
    return found
