"""Versioned schema: ``MIGRATIONS[n-1]`` takes the database from version n-1 to n.

Never edit a released migration; append a new one.  Times are Unix seconds (``time.time()``).
"""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    # 1: initial schema
    [
        # One row per Discord user who ever DMed the bot: the Chatwoot contact they map to and
        # their current conversation.
        """CREATE TABLE users (
            discord_id       TEXT PRIMARY KEY,
            dm_channel_id    TEXT,
            username         TEXT,
            display_name     TEXT,
            contact_id       INTEGER,
            source_id        TEXT,
            conversation_id  INTEGER,
            greeted_at       REAL,
            last_message_id  TEXT,
            created_at       REAL NOT NULL,
            updated_at       REAL NOT NULL
        )""",
        "CREATE INDEX users_by_contact ON users(contact_id)",
        "CREATE INDEX users_by_channel ON users(dm_channel_id)",
        # Conversations the bridge knows, with what it knows about them.
        """CREATE TABLE conversations (
            conversation_id   INTEGER PRIMARY KEY,
            discord_id        TEXT NOT NULL,
            status            TEXT,
            status_at         REAL,
            last_activity_at  REAL,
            uuid              TEXT,
            ooo_notified_at   REAL,
            closed_by_user_at REAL,
            reconcile_cursor  INTEGER,
            created_at        REAL NOT NULL
        )""",
        "CREATE INDEX conversations_by_user ON conversations(discord_id)",
        # Durable work queues.  A job is unique per (queue, dedupe_key) - the Discord or Chatwoot
        # message id - so a replayed event is stored once; jobs of one lane run in id order.
        """CREATE TABLE jobs (
            id               INTEGER PRIMARY KEY AUTOINCREMENT,
            queue            TEXT NOT NULL,
            dedupe_key       TEXT NOT NULL,
            lane             TEXT NOT NULL,
            kind             TEXT NOT NULL,
            payload          TEXT NOT NULL,
            state            TEXT NOT NULL DEFAULT 'pending'
                             CHECK (state IN ('pending', 'done', 'dead')),
            attempts         INTEGER NOT NULL DEFAULT 0,
            next_attempt_at  REAL NOT NULL,
            last_error       TEXT,
            result           TEXT,
            created_at       REAL NOT NULL,
            updated_at       REAL NOT NULL,
            UNIQUE (queue, dedupe_key)
        )""",
        "CREATE INDEX jobs_by_state ON jobs(queue, state, id)",
        # Which Discord message carries which Chatwoot message (both directions).
        """CREATE TABLE message_links (
            discord_message_id  TEXT NOT NULL,
            chatwoot_message_id INTEGER NOT NULL,
            conversation_id     INTEGER NOT NULL,
            discord_channel_id  TEXT NOT NULL,
            direction           TEXT NOT NULL CHECK (direction IN ('in', 'out')),
            created_at          REAL NOT NULL,
            PRIMARY KEY (discord_message_id, chatwoot_message_id)
        )""",
        "CREATE INDEX links_by_chatwoot ON message_links(chatwoot_message_id)",
        # CSAT answers, validated and deduped locally (Chatwoot overwrites on resubmission).
        """CREATE TABLE csat_responses (
            conversation_id  INTEGER PRIMARY KEY,
            discord_id       TEXT NOT NULL,
            rating           INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
            comment          TEXT,
            submitted_at     REAL,
            created_at       REAL NOT NULL
        )""",
        # Small named values: the gateway session for resume after restart, sweep cursors, ...
        """CREATE TABLE kv (
            key    TEXT PRIMARY KEY,
            value  TEXT NOT NULL
        )""",
    ],
    # 2: the newest linked message of a conversation without a scan (noted before each POST)
    [
        "CREATE INDEX links_by_conversation ON message_links(conversation_id, chatwoot_message_id)",
    ],
    # 3: the conversation's updated_at of the last status webhook applied (Chatwoot sends its
    # webhooks in no particular order: an older one must not undo a newer one)
    [
        "ALTER TABLE conversations ADD COLUMN status_event_at REAL",
    ],
]
