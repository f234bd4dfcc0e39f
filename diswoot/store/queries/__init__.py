"""Plain synchronous queries: ``fn(db, ...) -> value``, one transaction (or savepoint) each.

Call them through :meth:`diswoot.store.db.Store.call`; never from the trio thread.
Parameterised SQL only.  One module per table, and :mod:`.steps` for the bridge steps that
write several tables at once.
"""

from diswoot.store.queries.conversations import (
    adopt_conversation,
    apply_status_event,
    change_conversation_status,
    get_conversation,
    mark_ooo_notified,
    set_closed_by_user,
    set_conversation_uuid,
    set_reconcile_cursor,
    touch_conversation,
    upsert_conversation,
)
from diswoot.store.queries.csat import (
    get_csat,
    mark_csat_submitted,
    save_csat,
)
from diswoot.store.queries.jobs import (
    add_job,
    bury_job,
    finish_job,
    get_job,
    job_exists,
    job_lane,
    list_jobs,
    pending_jobs,
    prune_done_jobs,
    queue_stats,
    requeue_dead,
    reschedule_job,
    update_job_payload,
)
from diswoot.store.queries.kv import (
    get_value,
    set_value,
)
from diswoot.store.queries.links import (
    add_link,
    handled_chatwoot_messages,
    links_for_chatwoot,
    links_for_discord,
    newest_linked_chatwoot_message,
    reply_attempts,
)
from diswoot.store.queries.steps import (
    DmToStore,
    JobToAdd,
    accept_command,
    accept_dms,
    accept_reply,
    begin_post,
    finish_job_and_add,
    prepare_reply,
    record_inbound_delivery,
    record_outbound_part,
)
from diswoot.store.queries.tx import (
    transaction,
)
from diswoot.store.queries.users import (
    forget_user_contact,
    get_user,
    mark_greeted,
    note_last_message,
    set_user_contact,
    set_user_conversation,
    upsert_user,
    user_by_channel,
    users_active_since,
)

__all__ = [
    "DmToStore",
    "JobToAdd",
    "accept_command",
    "accept_dms",
    "accept_reply",
    "add_job",
    "add_link",
    "adopt_conversation",
    "apply_status_event",
    "begin_post",
    "bury_job",
    "change_conversation_status",
    "finish_job",
    "finish_job_and_add",
    "forget_user_contact",
    "get_conversation",
    "get_csat",
    "get_job",
    "get_user",
    "get_value",
    "handled_chatwoot_messages",
    "job_exists",
    "job_lane",
    "links_for_chatwoot",
    "links_for_discord",
    "list_jobs",
    "mark_csat_submitted",
    "mark_greeted",
    "mark_ooo_notified",
    "newest_linked_chatwoot_message",
    "note_last_message",
    "pending_jobs",
    "prepare_reply",
    "prune_done_jobs",
    "queue_stats",
    "record_inbound_delivery",
    "record_outbound_part",
    "reply_attempts",
    "requeue_dead",
    "reschedule_job",
    "save_csat",
    "set_closed_by_user",
    "set_conversation_uuid",
    "set_reconcile_cursor",
    "set_user_contact",
    "set_user_conversation",
    "set_value",
    "touch_conversation",
    "transaction",
    "update_job_payload",
    "upsert_conversation",
    "upsert_user",
    "user_by_channel",
    "users_active_since",
]
