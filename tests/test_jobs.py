"""Durable job queues: dedupe, per-lane order, retry forever, dead letters, restart."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import trio

from diswoot.bridge import jobs as jobs_module
from diswoot.bridge.jobs import JobQueue, PermanentFailure, RetryLater, Verdict, classify
from diswoot.store import Job, open_store
from diswoot.store import queries as q


def instant(_attempt: int) -> float:
    return 0.001


async def run_until(queue: JobQueue, done: trio.Event) -> None:
    stop = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(queue.run, stop)
            await done.wait()
            stop.set()


async def test_duplicates_are_stored_once(tmp_path: Path) -> None:
    handled: list[str] = []
    done = trio.Event()

    async def handler(job: Job) -> None:
        handled.append(job.dedupe_key)
        if len(handled) == 2:
            done.set()

    async with open_store(tmp_path / "t.db") as store:
        queue = JobQueue(store, "inbound", handler, backoff=instant)
        assert await queue.submit("message", "m1", "u1", {}) is not None
        assert await queue.submit("message", "m1", "u1", {}) is None
        assert await queue.submit("message", "m2", "u1", {}) is not None
        await run_until(queue, done)
        assert handled == ["m1", "m2"]
        assert queue.counters.duplicates == 1 and queue.counters.done == 2


async def test_lanes_keep_order_and_run_concurrently(tmp_path: Path) -> None:
    seen: dict[str, list[int]] = defaultdict(list)
    running = 0
    peak = 0
    done = trio.Event()
    total = 3 * 20

    async def handler(job: Job) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(0.001)
        seen[job.lane].append(job.payload["n"])
        running -= 1
        if sum(map(len, seen.values())) == total:
            done.set()

    async with open_store(tmp_path / "t.db") as store:
        queue = JobQueue(store, "inbound", handler, backoff=instant)
        for n in range(20):
            for lane in ("a", "b", "c"):
                await queue.submit("message", f"{lane}{n}", lane, {"n": n})
        await run_until(queue, done)
    assert all(order == list(range(20)) for order in seen.values())
    assert peak > 1  # lanes overlapped
    assert peak <= 3  # never two jobs of one lane at once


async def test_transient_failures_retry_until_success_in_order(tmp_path: Path) -> None:
    attempts: dict[str, int] = defaultdict(int)
    order: list[str] = []
    done = trio.Event()

    async def handler(job: Job) -> dict[str, Any]:
        attempts[job.dedupe_key] += 1
        if job.dedupe_key == "first" and attempts["first"] < 5:
            raise RetryLater("chatwoot unreachable")
        order.append(job.dedupe_key)
        if len(order) == 2:
            done.set()
        return {"ok": True}

    async with open_store(tmp_path / "t.db") as store:
        queue = JobQueue(store, "inbound", handler, backoff=instant)
        await queue.submit("message", "first", "u", {})
        await queue.submit("message", "second", "u", {})
        await run_until(queue, done)
        assert order == ["first", "second"]  # the second waited behind the retrying first
        assert attempts["first"] == 5 and queue.counters.retries == 4
        rows = await store.call(q.list_jobs, ("done",))
        assert {j.dedupe_key: j.attempts for j in rows} == {"first": 5, "second": 1}


async def test_permanent_failures_are_dead_lettered_and_the_lane_moves_on(tmp_path: Path) -> None:
    done = trio.Event()

    async def handler(job: Job) -> None:
        if job.dedupe_key == "bad":
            raise PermanentFailure("Chatwoot answered 422: invalid")
        done.set()

    async with open_store(tmp_path / "t.db") as store:
        queue = JobQueue(store, "inbound", handler, backoff=instant)
        await queue.submit("message", "bad", "u", {})
        await queue.submit("message", "good", "u", {})
        await run_until(queue, done)
        dead = await store.call(q.list_jobs, ("dead",))
        assert [(j.dedupe_key, j.last_error) for j in dead] == [
            ("bad", "Chatwoot answered 422: invalid")
        ]


async def test_unexpected_errors_retry_a_few_times_then_bury(tmp_path: Path) -> None:
    calls = 0
    third = trio.Event()

    async def handler(job: Job) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            third.set()
        raise RuntimeError("bug")

    async with open_store(tmp_path / "t.db") as store:
        queue = JobQueue(store, "inbound", handler, backoff=instant, max_unexpected_failures=3)
        await queue.submit("message", "x", "u", {})
        await run_until(queue, third)  # stopping lets the in-flight attempt finish
        dead = await store.call(q.list_jobs, ("dead",))
        assert [(j.dedupe_key, j.last_error) for j in dead] == [("x", "RuntimeError: bug")]
        assert calls == 3
        assert queue.counters.failures_by_kind == {"unexpected": 3}


async def test_a_malformed_job_is_dead_lettered_at_once_and_its_lane_moves_on(
    tmp_path: Path,
) -> None:
    handled: list[str] = []
    done = trio.Event()

    async def handler(job: Job) -> None:
        handled.append(job.dedupe_key)
        _ = job.payload["message"]["channel_id"]  # KeyError for the poison job
        if job.dedupe_key == "good":
            done.set()

    async with open_store(tmp_path / "t.db") as store:
        # the real backoff: a retry of the poison job would hold the lane for 0.8 s or more
        queue = JobQueue(store, "inbound", handler)
        await queue.submit("message", "poison", "u", {"message": {}})
        await queue.submit("message", "good", "u", {"message": {"channel_id": "1"}})
        start = trio.current_time()
        await run_until(queue, done)
        assert trio.current_time() - start < 0.5
        dead = await store.call(q.list_jobs, ("dead",))
        assert [(j.dedupe_key, j.attempts) for j in dead] == [("poison", 1)]
        assert dead[0].last_error == "malformed job: KeyError: 'channel_id'"
    assert handled == ["poison", "good"]
    assert queue.counters.failures_by_kind == {"malformed": 1}


def test_every_failure_is_classified_once() -> None:
    from diswoot.chatwoot.errors import (
        ChatwootError,
        ChatwootNotFound,
        ChatwootUnavailable,
        ChatwootUnprocessable,
    )
    from diswoot.rest.errors import DiscordHTTPError, DiscordRateLimited, DiscordUnavailable

    cases: list[tuple[Exception, Verdict, float | None]] = [
        (RetryLater("later", delay=3.0), Verdict.TRANSIENT, 3.0),
        (PermanentFailure("never"), Verdict.PERMANENT, None),
        (ChatwootUnavailable("down", status=503), Verdict.TRANSIENT, None),
        (ChatwootError("POST x", 400, {}, "bad"), Verdict.PERMANENT, None),
        (ChatwootNotFound("GET x", 404, {}, "gone"), Verdict.PERMANENT, None),
        (ChatwootUnprocessable("POST x", 422, {"error": "invalid"}, "h"), Verdict.PERMANENT, None),
        (
            ChatwootUnprocessable("POST x", 422, {"error": "Too many messages"}, "h"),
            Verdict.TRANSIENT,
            60.0,
        ),
        (DiscordHTTPError(403, 50007, "Cannot send", "POST /x"), Verdict.PERMANENT, None),
        (DiscordHTTPError(502, None, "Bad gateway", "POST /x"), Verdict.TRANSIENT, None),
        (DiscordRateLimited("banned", "POST /x", 12.5), Verdict.TRANSIENT, 12.5),
        (DiscordUnavailable("reset", "POST /x"), Verdict.TRANSIENT, None),
        (KeyError("author"), Verdict.MALFORMED, None),
        (TypeError("'NoneType' object is not subscriptable"), Verdict.MALFORMED, None),
        (ValueError("invalid literal for int()"), Verdict.MALFORMED, None),
        (OSError("disk full"), Verdict.TRANSIENT, None),
        (RuntimeError("bug"), Verdict.UNEXPECTED, None),
    ]
    for exc, verdict, delay in cases:
        failure = classify(exc)
        assert (failure.verdict, failure.delay) == (verdict, delay), exc


async def test_pending_jobs_survive_a_restart_and_requeued_dead_ones_are_picked_up(
    tmp_path: Path,
) -> None:
    handled: list[str] = []
    done = trio.Event()

    async def handler(job: Job) -> None:
        handled.append(job.dedupe_key)
        if len(handled) == 2:
            done.set()

    async with open_store(tmp_path / "t.db") as store:
        # stored by an earlier daemon that stopped before processing them
        await store.call(q.add_job, "inbound", "a", "u", "message", {}, 1.0)
        dead = await store.call(q.add_job, "inbound", "b", "u", "message", {}, 2.0)
        assert dead is not None
        await store.call(q.bury_job, dead.id, "gave up", 3.0)
        queue = JobQueue(store, "inbound", handler, backoff=instant)
        stop = trio.Event()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(queue.run, stop)
                await store.call(q.requeue_dead, 4.0)  # `diswoot queue retry`
                await queue._rescan()  # what run() does every RESCAN_SECONDS
                await done.wait()
                stop.set()
    assert handled == ["a", "b"]


async def test_jobs_waiting_behind_others_keep_their_payload_in_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind its lane's next job, a job is only its id; it is read back (READ_AHEAD at a
    time) when it is its turn."""
    seen: list[int] = []
    release = trio.Event()
    done = trio.Event()

    async def handler(job: Job) -> None:
        if not seen:
            await release.wait()
        seen.append(job.payload["n"])
        if len(seen) == 5:
            done.set()

    async with open_store(tmp_path / "t.db") as store:
        queue = JobQueue(store, "inbound", handler, backoff=instant)
        stop = trio.Event()
        monkeypatch.setattr(jobs_module, "READ_AHEAD", 2)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(queue.run, stop)
                for n in range(5):
                    await queue.submit("message", f"m{n}", "u1", {"n": n, "text": "x" * 1000})
                lane = list(queue._lanes["u1"])
                assert [isinstance(entry, Job) for entry in lane] == [True] + [False] * 4
                assert queue._payloads == 1
                before = store.batches
                release.set()
                await done.wait()
                stop.set()
    assert seen == [0, 1, 2, 3, 4]
    assert queue._payloads == 0
    # 4 jobs read back 2 at a time, and 5 job ends (some may share a batch)
    assert store.batches - before <= 2 + 5


async def test_a_job_submitted_while_the_queue_restarts_after_a_crash_runs_after_it(
    tmp_path: Path,
) -> None:
    """A bug crashes the queue's run, and its supervisor restarts it later.  A job submitted
    meanwhile is stored and waits; the job whose end was not recorded runs again."""
    handled: list[str] = []
    done = trio.Event()

    async def handler(job: Job) -> None:
        handled.append(job.dedupe_key)
        if len(handled) == 3:
            done.set()

    def buggy_on_done(job: Job, _seconds: float) -> None:
        if len(handled) == 1:
            raise RuntimeError("a bug after the handler")

    async with open_store(tmp_path / "t.db") as store:
        queue = JobQueue(store, "inbound", handler, backoff=instant, on_done=buggy_on_done)
        await queue.submit("message", "m1", "u1", {})
        with pytest.RaisesGroup(RuntimeError, flatten_subgroups=True):
            with trio.fail_after(10):
                await queue.run(trio.Event())
        assert await queue.submit("message", "m2", "u2", {}) is not None  # no closed nursery
        await run_until(queue, done)
        assert sorted(handled) == ["m1", "m1", "m2"]


@pytest.mark.parametrize(
    ("write", "first_attempt", "end_state"),
    [
        ("finish_job", None, "done"),
        ("reschedule_job", RetryLater("Chatwoot is down", delay=0.0), "done"),
        ("bury_job", PermanentFailure("Chatwoot answered 422"), "dead"),
    ],
)
async def test_bookkeeping_the_store_refuses_holds_its_lane_and_the_queue_runs_on(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    write: str,
    first_attempt: Exception | None,
    end_state: str,
) -> None:
    """A full disk refuses to record a job's end, retry or dead letter: the job stays at its
    lane's head (the lane's next job waits behind it), other lanes go on, and the write is
    tried again until the store takes it; no crash, nothing run twice that succeeded."""
    disk_full = True
    handled: list[str] = []
    retried = trio.Event()  # the queue saw the refusal and waits to try again
    done = trio.Event()
    stored = getattr(q, write)
    until_stored = jobs_module.until_stored

    def refusing(*args: Any) -> Any:
        if disk_full:
            raise sqlite3.OperationalError("database or disk is full")
        return stored(*args)

    async def observed(write: Any, *, what: str, log: Any, on_retry: Any) -> Any:
        def counted() -> None:
            on_retry()
            retried.set()

        return await until_stored(write, what=what, log=log, on_retry=counted)

    async def handler(job: Job) -> None:
        nonlocal disk_full
        handled.append(job.dedupe_key)
        if job.dedupe_key == "a":
            if first_attempt is not None and handled.count("a") == 1:
                raise first_attempt
        elif job.dedupe_key == "c":  # another lane, while a's lane waits for the store
            await retried.wait()
            disk_full = False
        elif job.dedupe_key == "b":
            done.set()

    monkeypatch.setattr(q, write, refusing)
    monkeypatch.setattr(jobs_module, "until_stored", observed)
    async with open_store(tmp_path / "t.db") as store:
        queue = JobQueue(store, "inbound", handler, backoff=instant)
        for key, lane in (("a", "u1"), ("b", "u1"), ("c", "u2")):
            await queue.submit("message", key, lane, {})
        await run_until(queue, done)
        rows = await store.call(q.list_jobs, ("pending", "done", "dead"))
        states = {job.dedupe_key: job.state for job in rows}
    runs_of_a = 1 if first_attempt is None or end_state == "dead" else 2
    assert handled.count("a") == runs_of_a and handled.count("b") == 1
    assert handled.index("c") < handled.index("b")  # b waited for a's bookkeeping
    assert states == {"a": end_state, "b": "done", "c": "done"}
    assert queue.counters.store_retries >= 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    refused = [m for m in warnings if m.startswith("could not ") and "(inbound queue)" in m]
    assert len(refused) == 1 and "kept in memory" in refused[0]


async def test_a_rescan_the_store_refuses_is_tried_at_the_next_period(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    idle_jump_clock: trio.testing.MockClock,
) -> None:
    """The periodic look for re-queued jobs fails (an I/O error): logged, and the next period
    picks them up; the queue does not crash."""
    handled: list[str] = []
    done = trio.Event()
    pending_refs = q.pending_job_refs

    async def handler(job: Job) -> None:
        handled.append(job.dedupe_key)
        done.set()

    def io_error(*_: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    async with open_store(tmp_path / "t.db") as store:
        dead = await store.call(q.add_job, "inbound", "a", "u", "message", {}, 1.0)
        assert dead is not None
        await store.call(q.bury_job, dead.id, "gave up", 2.0)
        queue = JobQueue(store, "inbound", handler, backoff=instant)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(queue.run, stop)
            monkeypatch.setattr(q, "pending_job_refs", io_error)
            await store.call(q.requeue_dead, 3.0)  # `diswoot queue retry`
            await trio.sleep(jobs_module.RESCAN_SECONDS + 1)
            assert handled == []
            monkeypatch.setattr(q, "pending_job_refs", pending_refs)
            with trio.fail_after(jobs_module.RESCAN_SECONDS + 1):
                await done.wait()
            stop.set()
    assert handled == ["a"]
    assert any(
        r.getMessage().startswith("inbound queue: could not look for re-queued jobs")
        for r in caplog.records
    )
