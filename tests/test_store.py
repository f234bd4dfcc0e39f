"""SQLite store: migrations, queries, and the thread discipline."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from diswoot.bridge.recent import RecentIds
from diswoot.store import open_store
from diswoot.store import queries as q
from diswoot.store.db import DEFER_SECONDS, connect, migrate, schema_version
from diswoot.store.schema import MIGRATIONS


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    db = connect(str(tmp_path / "a.db"))
    assert schema_version(db) == len(MIGRATIONS)
    assert migrate(db) == len(MIGRATIONS)  # nothing left to do
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    again = connect(str(tmp_path / "a.db"))
    assert schema_version(again) == len(MIGRATIONS)
    again.close()


def test_an_older_schema_is_upgraded_keeping_its_data(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, MIGRATIONS[:1])
    db.execute(
        "INSERT INTO users (discord_id, created_at, updated_at) VALUES ('42', 1.0, 1.0)"
    )
    newer = [*MIGRATIONS, ["ALTER TABLE users ADD COLUMN locale TEXT"]]
    assert migrate(db, newer) == len(newer)
    row = db.execute("SELECT discord_id, locale FROM users").fetchone()
    assert row == ("42", None)
    assert migrate(db, newer) == len(newer)


def test_failed_migration_rolls_back(tmp_path: Path) -> None:
    db = sqlite3.connect(str(tmp_path / "x.db"), isolation_level=None)
    migrate(db, MIGRATIONS)
    broken = [*MIGRATIONS, ["CREATE TABLE extra (id INTEGER)", "THIS IS NOT SQL"]]
    try:
        migrate(db, broken)
    except sqlite3.OperationalError:
        pass
    assert schema_version(db) == len(MIGRATIONS)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "extra" not in tables


async def test_calls_run_off_the_trio_thread(tmp_path: Path) -> None:
    trio_thread = threading.get_ident()
    seen: list[int] = []

    def probe(db: sqlite3.Connection) -> int:
        seen.append(threading.get_ident())
        return int(db.execute("SELECT 1").fetchone()[0])

    async with open_store(tmp_path / "nested" / "dir" / "t.db") as store:
        assert await store.call(probe) == 1
    assert seen and trio_thread not in seen
    assert (tmp_path / "nested" / "dir" / "t.db").exists()


async def test_user_and_conversation_queries(tmp_path: Path) -> None:
    async with open_store(tmp_path / "t.db") as store:
        user = await store.call(q.upsert_user, "42", 10.0, dm_channel_id="900", username="alice")
        assert user.dm_channel_id == "900" and user.contact_id is None
        await store.call(q.set_user_contact, "42", 55, "src-1", 11.0)
        await store.call(q.upsert_user, "42", 12.0, display_name="Alice")
        user = await store.call(q.get_user, "42")
        assert user is not None
        assert (user.username, user.display_name, user.contact_id) == ("alice", "Alice", 55)
        assert (await store.call(q.user_by_channel, "900")) == user
        assert await store.call(q.mark_greeted, "42", 13.0) is True
        assert await store.call(q.mark_greeted, "42", 14.0) is False
        for message_id in ("1000", "999", "10000"):  # 999: older, ignored; ids are integers
            dm = q.DmToStore("user:42", "message", {}, "42", "900", message_id)
            await store.call(q.accept_dms, "inbound", [dm], 15.0)
        user = await store.call(q.get_user, "42")
        assert user is not None and user.last_message_id == "10000"

        conv = await store.call(q.upsert_conversation, 7, "42", 20.0, status="open")
        assert conv.status == "open" and conv.status_at == 20.0
        assert await store.call(q.change_conversation_status, 7, "resolved", 21.0) == "open"
        assert await store.call(q.change_conversation_status, 99, "open", 21.0) is None
        conv = await store.call(q.upsert_conversation, 7, "42", 22.0, uuid="u-1")
        assert conv.status == "resolved" and conv.uuid == "u-1"
        assert await store.call(q.mark_ooo_notified, 7, 23.0) is True
        assert await store.call(q.mark_ooo_notified, 7, 24.0) is False
        await store.call(q.set_closed_by_user, 7, 25.0)
        assert (await store.call(q.get_conversation, 7)).closed_by_user_at == 25.0


async def test_jobs_links_csat_and_kv(tmp_path: Path) -> None:
    async with open_store(tmp_path / "t.db") as store:
        job = await store.call(q.add_job, "inbound", "m1", "42", "message", {"a": 1}, 1.0)
        assert job is not None and job.payload == {"a": 1} and job.state == "pending"
        assert await store.call(q.add_job, "inbound", "m1", "42", "message", {}, 2.0) is None
        assert await store.call(q.job_exists, "inbound", "m1")
        assert await store.call(q.reschedule_job, job.id, "boom", 9.0, 3.0) == 1
        await store.call(q.bury_job, job.id, "gone", 4.0)
        listed = await store.call(q.list_jobs)
        assert [(j.id, j.state, j.last_error) for j in listed] == [(job.id, "dead", "gone")]
        stats = await store.call(q.queue_stats)
        assert stats["inbound"].dead == 1 and stats["inbound"].pending == 0
        back = await store.call(q.requeue_dead, 5.0)
        assert [j.id for j in back] == [job.id] and back[0].state == "pending"
        await store.call(q.finish_job, job.id, 6.0, {"chatwoot_message_id": 9})
        assert await store.call(q.pending_jobs, "inbound") == []
        assert await store.call(q.prune_done_jobs, 7.0, 0, 10) == (1, None)

        await store.call(q.add_link, "d1", 9, 7, "900", "in", 1.0)
        await store.call(q.add_link, "d1", 9, 7, "900", "in", 1.0)  # idempotent
        assert len(await store.call(q.links_for_chatwoot, 9)) == 1
        assert (await store.call(q.links_for_discord, "d1"))[0].chatwoot_message_id == 9

        assert await store.call(q.save_csat, 7, "42", 5, "great", 1.0) is True
        assert await store.call(q.save_csat, 7, "42", 1, None, 2.0) is False
        await store.call(q.mark_csat_submitted, 7, 3.0)
        csat = await store.call(q.get_csat, 7)
        assert csat is not None and (csat.rating, csat.submitted_at) == (5, 3.0)

        await store.call(q.set_value, "k", {"x": [1, 2]})
        assert await store.call(q.get_value, "k") == {"x": [1, 2]}
        assert await store.call(q.get_value, "missing") is None


async def test_concurrent_calls_are_serialised(tmp_path: Path) -> None:
    async with open_store(tmp_path / "t.db") as store:
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(store.call, q.add_job, "q", f"k{i}", "l", "k", {}, float(i))
        assert len(await store.call(q.pending_jobs, "q")) == 50


async def test_queued_calls_share_one_thread_hop_and_keep_their_own_results(
    tmp_path: Path,
) -> None:
    def boom(db: sqlite3.Connection) -> None:
        raise ValueError("bad query")

    results: dict[int, object] = {}

    async def one(i: int) -> None:
        if i == 3:
            try:
                await store.call(boom)
            except ValueError as exc:
                results[i] = exc
            return
        job = await store.call(q.add_job, "q", f"k{i}", "l", "k", {}, float(i))
        results[i] = job.id if job else None

    async with open_store(tmp_path / "t.db") as store:
        before = store.batches
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, i)
        hops = store.batches - before
    assert isinstance(results.pop(3), ValueError)  # one failure does not spoil the batch
    assert sorted(v for v in results.values() if isinstance(v, int)) == list(range(1, 20))
    assert hops < 20  # calls queued while a batch ran were taken together


async def test_a_batch_commits_once_and_a_failing_call_undoes_only_its_own_writes(
    tmp_path: Path,
) -> None:
    def half_then_fail(db: sqlite3.Connection) -> None:
        with q.transaction(db):
            q.add_job(db, "q", "half", "l", "k", {}, 1.0)
            raise ValueError("second statement failed")

    commits: list[str] = []

    def count_commits(db: sqlite3.Connection) -> None:
        db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)

    async def failing() -> None:
        try:
            await store.call(half_then_fail)
        except ValueError:
            pass

    async with open_store(tmp_path / "t.db") as store:
        await store.call(count_commits)
        commits.clear()
        before = store.batches
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(store.call, q.add_job, "q", f"k{i}", "l", "k", {}, 1.0)
            nursery.start_soon(failing)
            for i in range(10, 20):
                nursery.start_soon(store.call, q.add_job, "q", f"k{i}", "l", "k", {}, 1.0)
        batches, committed = store.batches - before, len(commits)
        keys = {job.dedupe_key for job in await store.call(q.pending_jobs, "q")}
    assert keys == {f"k{i}" for i in range(20)}  # "half" was rolled back, nothing else
    assert committed == batches < 21  # one commit per batch, not per call


async def test_a_batch_without_failures_writes_no_savepoints(tmp_path: Path) -> None:
    statements: list[str] = []

    def trace(db: sqlite3.Connection) -> None:
        db.set_trace_callback(statements.append)

    async with open_store(tmp_path / "t.db") as store:
        await store.call(trace)
        statements.clear()
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(store.call, q.add_job, "q", f"k{i}", "l", "k", {}, 1.0)
        assert len(await store.call(q.pending_jobs, "q")) == 20
    assert not [s for s in statements if "SAVEPOINT" in s or "ROLLBACK" in s]
    assert statements.count("BEGIN IMMEDIATE") == statements.count("COMMIT") > 0


async def test_a_failed_batch_runs_again_with_every_argument_intact(tmp_path: Path) -> None:
    """The failing call makes the batch run twice; a generator argument (positional or
    keyword) is not used up."""

    def fail(db: sqlite3.Connection) -> None:
        with q.transaction(db):
            q.add_job(db, "q", "doomed", "l", "k", {}, 1.0)
            raise ValueError("no")

    async def failing() -> None:
        with pytest.raises(ValueError):
            await store.call(fail)

    def dms_of(i: int) -> Iterator[q.DmToStore]:
        return (q.DmToStore("l", "message", {}, "1", "2", f"{i}-{n}") for n in range(3))

    statements: list[str] = []
    async with open_store(tmp_path / "t.db") as store:
        await store.call(lambda db: db.set_trace_callback(statements.append))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.call, q.add_job, "q", "first", "l", "k", {}, 1.0)
            nursery.start_soon(failing)
            nursery.start_soon(failing)
            for i in range(5):
                if i % 2:
                    nursery.start_soon(store.call, q.accept_dms, "dm", dms_of(i), 1.0)
                else:  # by keyword
                    nursery.start_soon(partial(store.call, q.accept_dms, "dm", dms=dms_of(i),
                                               now=1.0))
        keys = {job.dedupe_key for job in await store.call(q.list_jobs, ("pending",))}
    assert keys == {"first"} | {f"{i}-{n}" for i in range(5) for n in range(3)}
    assert "ROLLBACK" in statements and "SAVEPOINT step" in statements  # it did run twice


async def test_a_cancelled_caller_either_never_ran_or_ran_completely(tmp_path: Path) -> None:
    async with open_store(tmp_path / "t.db") as store:
        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(store.call, q.add_job, "q", f"k{i}", "l", "k", {}, 1.0)
            await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()
        stored = await store.call(q.pending_jobs, "q")
        # nothing half-done: every stored job is complete and the store still works
        assert all(job.dedupe_key.startswith("k") for job in stored)
        assert await store.call(q.add_job, "q", "after", "l", "k", {}, 2.0) is not None


@pytest.mark.parametrize("moment", ["before the lead passes to it", "once it has the lead"])
async def test_a_waiting_caller_cancelled_as_its_batch_begins_never_fails_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    """When a batch ends, the oldest waiting caller is woken to lead the next one (with every
    call queued behind it).  If that caller is cancelled just then, the calls behind it must
    still run: neither wait forever (a lost lead, and a store that never runs again: the
    daemon's shielded shutdown writes hung) nor fail as not run.  The cancellation is placed
    exactly: in the ending batch's own task, just before it passes the lead on (while it
    applies the batch's routing rows), or just after (when its own call has returned)."""
    gate = threading.Event()
    behind: list[str] = []
    cancelled = trio.CancelScope()
    async with open_store(tmp_path / "t.db") as store:
        if moment == "before the lead passes to it":
            apply = store.routing.apply

            def apply_then_cancel(changes: Any) -> None:
                apply(changes)
                cancelled.cancel()

            monkeypatch.setattr(store.routing, "apply", apply_then_cancel)

        async def lead() -> None:
            await store.call(lambda db: gate.wait(5))  # a batch that blocks until released
            cancelled.cancel()

        async def first() -> None:
            with cancelled:
                await store.call(lambda db: None)

        async def second() -> None:
            behind.append(await store.call(lambda db: "ran"))

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lead)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(first)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(second)
                await trio.testing.wait_all_tasks_blocked()
                gate.set()
            assert cancelled.cancelled_caught
            assert behind == ["ran"]
            monkeypatch.undo()
            assert await store.call(lambda db: "later") == "later"  # the store still runs


def _job_states(path: Path) -> dict[str, str]:
    """What another connection sees: dedupe key -> state (committed rows only)."""
    db = connect(str(path))
    try:
        return {r["dedupe_key"]: r["state"] for r in db.execute("SELECT * FROM jobs")}
    finally:
        db.close()


async def test_a_deferred_write_rides_with_the_next_batch(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    async with open_store(path) as store:
        job = await store.call(q.add_job, "q", "k", "l", "k", {}, 1.0)
        assert job is not None
        store.defer(q.finish_job, job.id, 2.0, {"ok": True})
        assert await trio.to_thread.run_sync(_job_states, path) == {"k": "pending"}
        before = store.batches
        await store.call(q.add_job, "q", "k2", "l", "k", {}, 3.0)
        assert store.batches == before + 1  # no hop of its own
        assert await trio.to_thread.run_sync(_job_states, path) == {"k": "done", "k2": "pending"}


async def test_a_deferred_write_is_written_alone_within_its_delay(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "t.db"
    async with open_store(path) as store:
        job = await store.call(q.add_job, "q", "k", "l", "k", {}, 1.0)
        assert job is not None
        store.defer(q.finish_job, job.id, 2.0, None)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(DEFER_SECONDS * 0.9)  # the clock moves only here
        await trio.testing.wait_all_tasks_blocked()
        assert await trio.to_thread.run_sync(_job_states, path) == {"k": "pending"}
        mock_clock.jump(DEFER_SECONDS * 0.1)
        for _ in range(1000):  # each try waits for a thread: real time, bounded
            if await trio.to_thread.run_sync(_job_states, path) == {"k": "done"}:
                break
        assert await trio.to_thread.run_sync(_job_states, path) == {"k": "done"}


async def test_deferred_writes_are_written_at_close_and_a_failing_one_is_only_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(db: sqlite3.Connection) -> None:
        db.execute("UPDATE no_such_table SET x = 1")

    path = tmp_path / "t.db"
    async with open_store(path) as store:
        job = await store.call(q.add_job, "q", "k", "l", "k", {}, 1.0)
        assert job is not None
        store.defer(broken)
        store.defer(q.finish_job, job.id, 2.0, None)
    assert _job_states(path) == {"k": "done"}
    assert "a deferred store write failed" in caplog.text


# ---- perf: the combined queries do what the separate ones did


def test_record_inbound_delivery_matches_the_separate_queries(tmp_path: Path) -> None:
    separate, combined = connect(str(tmp_path / "a.db")), connect(str(tmp_path / "b.db"))
    for db in (separate, combined):
        q.upsert_user(db, "u1", 1.0, username="alice")
        q.upsert_conversation(db, 7, "u1", 1.0, status="resolved")
    q.add_link(separate, "m9", 70, 7, "c1", "in", 5.0)
    q.touch_conversation(separate, 7, 5.0)
    q.change_conversation_status(separate, 7, "open", 5.0)
    inbound = q.add_job(combined, "inbound", "m9", "u1", "message", {}, 4.0)
    assert inbound is not None
    reaction = q.record_inbound_delivery(
        combined,
        discord_message_id="m9",
        chatwoot_message_id=70,
        conversation_id=7,
        channel_id="c1",
        now=5.0,
        reopened=True,
        finish=(inbound.id, {"ok": 1}),
        then=q.JobToAdd("outbound", "react:m9", "chan:c1", "reaction", {"m": "m9"}),
    )
    assert reaction is not None and reaction.dedupe_key == "react:m9"
    [done] = q.list_jobs(combined, states=("done",))
    assert done.id == inbound.id and done.result == {"ok": 1}
    assert q.get_user(combined, "u1") == q.get_user(separate, "u1")  # noted when stored
    assert q.get_conversation(combined, 7) == q.get_conversation(separate, 7)
    assert q.links_for_discord(combined, "m9") == q.links_for_discord(separate, "m9")


def test_accept_dms_and_begin_post(tmp_path: Path) -> None:
    db = connect(str(tmp_path / "t.db"))
    first = q.DmToStore("u1", "message", {"n": 1}, "u1", "c1", "900")
    [job] = q.accept_dms(db, "inbound", [first], 2.0)
    assert job is not None and job.dedupe_key == "900"
    again = first._replace(channel_id="c2")
    more = q.DmToStore("u1", "message", {"n": 2}, "u1", "c1", "901")
    stored = q.accept_dms(db, "inbound", [again, more], 3.0)
    assert stored[0] is None  # a duplicate changes nothing
    assert stored[1] is not None and stored[1].dedupe_key == "901"
    user = q.get_user(db, "u1")
    assert user is not None and (user.dm_channel_id, user.last_message_id) == ("c1", "901")
    q.upsert_conversation(db, 7, "u1", 5.0, status="open")
    q.add_link(db, "900", 70, 7, "c1", "in", 5.0)

    payload: dict[str, object] = {"message": {}}
    assert q.begin_post(db, job.id, payload, 7) == 70
    assert payload["posting"] == {"conversation_id": 7, "after": 70}
    assert q.pending_jobs(db, "inbound")[0].payload["posting"] == payload["posting"]


# ---- routing state in memory, written through


async def test_routing_rows_are_served_from_memory_and_written_through(tmp_path: Path) -> None:
    async with open_store(tmp_path / "t.db") as store:
        await store.call(q.upsert_user, "u1", 1.0, dm_channel_id="c1")
        await store.call(q.upsert_conversation, 7, "u1", 1.0, status="open")
        batches = store.batches
        assert (await store.user("u1")).dm_channel_id == "c1"  # type: ignore[union-attr]
        assert (await store.conversation(7)).status == "open"  # type: ignore[union-attr]
        assert store.batches == batches  # no store call: both were written through
        # every write path updates memory, whichever query made it
        await store.call(q.change_conversation_status, 7, "resolved", 2.0)
        await store.call(q.set_user_conversation, "u1", 7, 2.0)
        assert (await store.conversation(7)).status == "resolved"  # type: ignore[union-attr]
        assert (await store.user("u1")).conversation_id == 7  # type: ignore[union-attr]

        def fails_after_writing(db: sqlite3.Connection) -> None:
            with q.transaction(db):
                db.execute("UPDATE conversations SET status = 'open' WHERE conversation_id = 7")
                raise ValueError("rolled back")

        try:
            await store.call(fails_after_writing)
        except ValueError:
            pass
        assert (await store.conversation(7)).status == "resolved"  # type: ignore[union-attr]
        # a miss is read once, and an absent row is remembered as absent
        assert await store.user("nobody") is None
        batches = store.batches
        assert await store.user("nobody") is None
        assert store.batches == batches
        await store.call(q.upsert_user, "nobody", 3.0)
        assert await store.user("nobody") is not None  # the insert replaced "absent"
    async with open_store(tmp_path / "t.db") as store:  # a restart loads them
        batches = store.batches
        assert (await store.conversation(7)).status == "resolved"  # type: ignore[union-attr]
        assert store.batches == batches


async def test_the_routing_cache_keeps_at_most_its_limit(tmp_path: Path) -> None:
    async with open_store(tmp_path / "t.db") as store:
        store.routing.users.limit = 5
        for i in range(8):
            await store.call(q.upsert_user, f"u{i}", float(i))
        assert len(store.routing.users.rows) == 5
        assert (await store.user("u0")) is not None  # evicted: read through the store


def test_prepare_reply_and_finish_job_and_add(tmp_path: Path) -> None:
    db = connect(str(tmp_path / "t.db"))
    reply = q.add_job(db, "outbound", "msg:5", "conv:1", "reply", {"message_id": 5}, 1.0)
    assert reply is not None
    payload: dict[str, object] = {"message_id": 5}
    assert q.prepare_reply(db, reply.id, "outbound", 5, payload, [{"content": "hi"}]) is None
    assert q.pending_jobs(db, "outbound")[0].payload["parts"] == [{"content": "hi"}]
    q.add_link(db, "900", 5, 1, "c1", "out", 2.0)
    assert q.prepare_reply(db, reply.id, "outbound", 5, {}, []) == {"already_delivered": ["900"]}
    q.add_job(db, "outbound", "delete:5", "conv:1", "delete", {}, 3.0)
    assert q.prepare_reply(db, reply.id, "outbound", 5, {}, []) == {
        "suppressed": "deleted by an agent"
    }
    receipt = q.JobToAdd("receipts", "receipt:5", "conv:1", "receipt", {"status": "delivered"})
    added = q.finish_job_and_add(db, reply.id, 4.0, {"ok": True}, receipt)
    assert added is not None and added.queue == "receipts"
    assert q.finish_job_and_add(db, reply.id, 5.0, {"ok": True}, receipt) is None  # stored once
    [done] = q.list_jobs(db, states=("done",))
    assert done.id == reply.id and done.result == {"ok": True}


def test_accept_reply_prepares_unless_held_and_the_last_part_ends_the_job(
    tmp_path: Path,
) -> None:
    db = connect(str(tmp_path / "t.db"))
    parts = [{"content": "hi"}]

    def reply(mid: int) -> q.JobToAdd:
        return q.JobToAdd("outbound", f"msg:{mid}", "conv:1", "reply", {"message_id": mid})

    ready = q.accept_reply(db, reply(5), 5, parts, 1.0)
    assert ready is not None and ready.payload["parts"] == parts
    assert q.get_job(db, ready.id).payload["parts"] == parts  # type: ignore[union-attr]
    assert q.accept_reply(db, reply(5), 5, parts, 1.5) is None  # a duplicate
    q.add_job(db, "outbound", "delete:6", "conv:1", "delete", {}, 2.0)
    held = q.accept_reply(db, reply(6), 6, parts, 2.5)
    assert held is not None and "parts" not in held.payload  # the run's prepare_reply says why
    template = q.accept_reply(db, reply(7), 7, None, 3.0)
    assert template is not None and "parts" not in template.payload

    receipt = q.JobToAdd("receipts", "receipt:5", "conv:1", "receipt", {"status": "delivered"})
    payload = {**ready.payload, "sent": ["900"]}
    added = q.record_outbound_part(
        db, ready.id, payload, "900", "c1", 5, 1, 4.0, ending=({"ids": ["900"]}, receipt)
    )
    assert added is not None and added.dedupe_key == "receipt:5"
    done = q.get_job(db, ready.id)
    assert done is not None and done.state == "done" and done.result == {"ids": ["900"]}
    assert done.payload["sent"] == ["900"]
    assert [link.direction for link in q.links_for_chatwoot(db, 5)] == ["out"]


def test_recent_ids_forget_the_oldest_first() -> None:
    recent = RecentIds(3)
    for key in (1, 2, 3, 1, 4):
        recent.add(key)
    assert 1 in recent and 4 in recent and 2 not in recent and len(recent) == 3
