"""``diswoot queue`` lists pending and dead-lettered work; ``diswoot queue retry`` re-queues it.

The CLI runs as a real subprocess against a database seeded with the store's own queries.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import trio

from diswoot.cli import format_jobs
from diswoot.config import test_config
from diswoot.store import Job, open_store
from diswoot.store import queries as q
from diswoot.testing.harness import config_environment

TIMEOUT = 30


async def seed(db: Path) -> dict[str, int]:
    """Two pending jobs (one failing), two dead letters and one done job; returns their ids."""
    now = time.time()
    async with open_store(db) as store:
        async def add(queue: str, key: str, kind: str, age: float) -> int:
            job = await store.call(q.add_job, queue, key, f"lane-{key}", kind, {}, now - age)
            assert job is not None
            return job.id

        ids = {
            "fresh": await add("inbound", "m1", "message", 90),
            "failing": await add("outbound", "c1", "reply", 3 * 3600),
            "dead": await add("outbound", "c2", "reply", 3 * 86400),
            "dead2": await add("csat", "c3", "csat", 600),
            "done": await add("inbound", "m0", "message", 5),
        }
        await store.call(q.reschedule_job, ids["failing"],
                         "Discord unavailable: 503\nretry later", now + 60, now)
        await store.call(q.bury_job, ids["dead"], "Discord 50007: Cannot send messages", now)
        await store.call(q.bury_job, ids["dead2"], "Chatwoot 422: CSAT locked", now)
        await store.call(q.finish_job, ids["done"], now)
    return ids


async def jobs_in(db: Path, state: str) -> list[Job]:
    async with open_store(db) as store:
        return await store.call(q.list_jobs, (state,))


async def diswoot(tmp_path: Path, db: Path, *args: str, credentials: bool = True) -> str:
    """Run ``python -m diswoot ARGS`` with a valid environment (or only DISWOOT_DB_PATH);
    returns stdout (exit 0 asserted)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "CHATWOOT_"))}
    if credentials:
        env.update(config_environment(test_config(diswoot_db_path=str(db))))
    else:
        env["DISWOOT_DB_PATH"] = str(db)
    with trio.fail_after(TIMEOUT):
        result = await trio.run_process(
            [sys.executable, "-m", "diswoot", *args], env=env, cwd=tmp_path,
            capture_stdout=True, capture_stderr=True, check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    return result.stdout.decode()


def table(output: str) -> dict[str, str]:
    """Job id -> its row (the header and the summary line left out)."""
    rows = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[0].isdigit() and parts[2] in ("pending", "dead"):
            rows[parts[0]] = line
    return rows


def row(output: str, job_id: int) -> str:
    return table(output)[str(job_id)]


async def test_queue_lists_pending_and_dead_letters_with_ages_and_errors(tmp_path: Path) -> None:
    db = tmp_path / "diswoot.db"
    ids = await seed(db)
    output = await diswoot(tmp_path, db, "queue")

    assert row(output, ids["fresh"]).split()[1:6] == ["inbound", "pending", "message", "90s", "0"]
    failing = row(output, ids["failing"])
    assert failing.split()[1:6] == ["outbound", "pending", "reply", "3h", "1"]
    assert failing.endswith("Discord unavailable: 503 retry later")  # one line per job
    dead = row(output, ids["dead"])
    assert dead.split()[1:6] == ["outbound", "dead", "reply", "3d", "1"]
    assert dead.endswith("Discord 50007: Cannot send messages")
    assert row(output, ids["dead2"]).split()[4] == "10m"
    listed = sorted(str(ids[k]) for k in ("fresh", "failing", "dead", "dead2"))
    assert sorted(table(output)) == listed  # the done job is not listed
    assert output.splitlines()[-1].startswith("2 pending, 2 dead-lettered")


async def test_queue_retry_requeues_dead_letters(tmp_path: Path) -> None:
    db = tmp_path / "diswoot.db"
    ids = await seed(db)
    output = await diswoot(tmp_path, db, "queue", "retry", str(ids["dead2"]))
    assert output.startswith("re-queued 1 dead-lettered job(s)")
    assert [j.id for j in await jobs_in(db, "dead")] == [ids["dead"]]

    output = await diswoot(tmp_path, db, "queue", "retry")
    assert output.startswith("re-queued 1 dead-lettered job(s)")
    assert await jobs_in(db, "dead") == []
    pending = await jobs_in(db, "pending")
    assert sorted(j.id for j in pending) == sorted([ids["fresh"], ids["failing"], ids["dead"],
                                                    ids["dead2"]])
    revived = next(j for j in pending if j.id == ids["dead"])
    assert revived.next_attempt_at <= time.time()  # due now

    output = await diswoot(tmp_path, db, "queue")
    assert output.splitlines()[-1].startswith("4 pending, 0 dead-lettered")


async def test_missing_database_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "nowhere" / "diswoot.db"
    output = await diswoot(tmp_path, db, "queue")
    assert output.startswith(f"no database at {db}")
    assert not db.parent.exists()


async def test_empty_queue(tmp_path: Path) -> None:
    db = tmp_path / "diswoot.db"
    async with open_store(db):
        pass
    assert (await diswoot(tmp_path, db, "queue")).strip() == "no pending or dead-lettered work"
    output = await diswoot(tmp_path, db, "queue", "retry")
    assert output.startswith("re-queued 0 dead-lettered job(s)")


def test_ages_are_human_readable() -> None:
    job = Job(id=1, queue="inbound", dedupe_key="k", lane="l", kind="message", payload={},
              state="pending", attempts=0, next_attempt_at=0, last_error=None, result=None,
              created_at=1000.0, updated_at=1000.0)
    ages = {}
    for seconds in (0, 119, 120, 7199, 7200, 172799, 172800):
        table = format_jobs([job], now=1000.0 + seconds)
        ages[seconds] = table.splitlines()[1].split()[4]
    assert ages == {0: "0s", 119: "119s", 120: "2m", 7199: "119m", 7200: "2h",
                    172799: "47h", 172800: "2d"}
    long_error = format_jobs([job.__class__(**{**job.__dict__, "last_error": "x" * 500})],
                             now=1000.0)
    assert len(long_error.splitlines()[1]) < 160


async def test_queue_needs_only_the_database_path(tmp_path: Path) -> None:
    """An operator inspecting the queue on a host without the credentials in the shell."""
    db = tmp_path / "diswoot.db"
    ids = await seed(db)
    output = await diswoot(tmp_path, db, "queue", credentials=False)
    assert str(ids["dead"]) in table(output)
    output = await diswoot(tmp_path, tmp_path / "none.db", "queue", credentials=False)
    assert output.startswith("no database at")
