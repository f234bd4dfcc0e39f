"""Hands gateway events to the component that owns them.

One task receives the gateway's typed events in order and makes each durable (inbound DMs are
stored before anything else) or starts its handler.  No event can end the router: a failing one
is logged, counted and skipped, but a DM is never skipped for the store's own failure.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from diswoot.bridge.inbound import InboundBridge
from diswoot.bridge.interactions import InteractionRouter
from diswoot.bridge.persist import until_stored
from diswoot.context import Context
from diswoot.gateway.events import (
    REJECT_HANDLER_ERROR,
    GatewayEvent,
    GatewayStatus,
    InteractionCreate,
    MessageCreate,
    MessageDelete,
    MessageUpdate,
    Ready,
    Rejected,
    Resumed,
    TypingStart,
)
from diswoot.supervise import describe_error

log = logging.getLogger("diswoot.router")

GROUP_MAX = 256
"""DMs waiting in the channel that are stored in one transaction, at most."""


@dataclass
class Intake:
    """Whether every event the gateway handed to the router was handled.

    The gateway counts a dispatch as done (its ``seq``, where a RESUME starts) when it enters
    the router's channel, so its session may be saved only while every event it delivered
    (``GatewayStatus.delivered``) was taken by the router and none is being stored: a RESUME
    from a session saved past that could skip DMs that never reached the store.
    """

    busy: int = 0  # batches of DMs and text commands being handled now
    taken: int = 0  # events the router took from its channel

    def all_handled(self, gateway: GatewayStatus) -> bool:
        """Every event the gateway delivered was taken (none waits in the channel, or in the
        hand-over to a router that waited and has not run yet), none is being handled."""
        return not self.busy and self.taken == gateway.delivered


_EVENT_TYPES: dict[type[Any], str] = {
    Ready: "READY",
    Resumed: "RESUMED",
    MessageCreate: "MESSAGE_CREATE",
    MessageUpdate: "MESSAGE_UPDATE",
    MessageDelete: "MESSAGE_DELETE",
    TypingStart: "TYPING_START",
    InteractionCreate: "INTERACTION_CREATE",
}


def reject(ctx: Context, rejected: Rejected) -> None:
    """Log (once, at warning level) and count an event that is skipped."""
    log.warning(
        "skipped gateway event %s%s: %s (%s)",
        rejected.type,
        f" {rejected.id}" if rejected.id else "",
        rejected.reason,
        rejected.detail,
    )
    ctx.metrics.events_rejected.labels(type=rejected.type, reason=rejected.reason).inc()


def _handler_failed(ctx: Context, event: GatewayEvent, exc: Exception) -> None:
    event_id = getattr(event, "id", None)
    if isinstance(event, InteractionCreate):
        event_id = event.data["id"]
    kind = _EVENT_TYPES.get(type(event), "other")
    reject(ctx, Rejected(kind, event_id, REJECT_HANDLER_ERROR, describe_error(exc)))


async def _contained(
    ctx: Context, event: GatewayEvent, fn: Callable[..., Awaitable[Any]], *args: Any
) -> None:
    """Run a handler in the router's nursery; its failure is the event's, not the router's."""
    try:
        await fn(*args)
    except Exception as exc:
        _handler_failed(ctx, event, exc)


async def _text_command(
    ctx: Context, event: MessageCreate, interactions: InteractionRouter, intake: Intake
) -> None:
    """A text command runs beside the router; it is handled once it returns (not cancelled)."""
    await _contained(ctx, event, interactions.handle_text_command, event)
    intake.busy -= 1


async def _route(
    event: GatewayEvent,
    ctx: Context,
    inbound: InboundBridge,
    interactions: InteractionRouter,
    nursery: trio.Nursery,
    intake: Intake,
) -> None:
    match event:
        case MessageCreate():
            # a text command (`!status`, `!close ...`): answered, never forwarded to Chatwoot;
            # plain DMs never reach here, route_events stores them in groups
            intake.busy += 1
            nursery.start_soon(_text_command, ctx, event, interactions, intake)
        case MessageUpdate():
            await _until_stored(ctx, "store an edit of a DM", partial(inbound.accept_edit, event))
        case MessageDelete():
            delete = partial(inbound.accept_delete, event)
            await _until_stored(ctx, "store a deletion of a DM", delete)
        case TypingStart():
            inbound.user_typing(event)
        case InteractionCreate():
            nursery.start_soon(_contained, ctx, event, interactions.handle_gateway, event.data)
        case Ready():
            ctx.application_id = event.application_id or ctx.application_id
            log.info("gateway ready as %s (fresh session)", event.tag)
            inbound.session_started(nursery)  # the backfill (it never raises)
        case Resumed():
            log.info("gateway session resumed (%d events replayed)", event.replayed)
        case Rejected():
            reject(ctx, event)


async def _store_dms(ctx: Context, inbound: InboundBridge, dms: list[MessageCreate]) -> None:
    """Store DMs that waited together in one transaction (group commit).

    A failure of the DMs' own is logged, counted and skipped, as for any event; the store's
    own failures are waited out (:func:`_until_stored`).
    """
    try:
        await _until_stored(ctx, f"store {len(dms)} DM(s)", partial(inbound.accept_messages, dms))
    except Exception as exc:
        for event in dms:
            _handler_failed(ctx, event, exc)


async def _until_stored(ctx: Context, what: str, store: Callable[[], Awaitable[object]]) -> None:
    """Run ``store`` until the store takes it (:func:`persist.until_stored`); any failure of the
    data's own propagates.

    Meanwhile the DMs stay in memory, the router - and through its channel the gateway - waits,
    and the gateway session is not saved past them (:class:`Intake`).
    """
    await until_stored(store, what=what, log=log, on_retry=ctx.metrics.dm_store_retries.inc)


def _waiting(
    first: GatewayEvent, events_rx: trio.MemoryReceiveChannel[GatewayEvent]
) -> list[GatewayEvent]:
    """``first`` and the events already waiting behind it (at most :data:`GROUP_MAX`)."""
    batch = [first]
    while len(batch) < GROUP_MAX:
        try:
            batch.append(events_rx.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return batch


async def route_events(
    events_rx: trio.MemoryReceiveChannel[GatewayEvent],
    ctx: Context,
    inbound: InboundBridge,
    interactions: InteractionRouter,
    intake: Intake,
) -> None:
    """Route every event until the gateway closes the channel (see docs/modules.md).

    ``intake`` counts what is being handled; a batch cut short (cancelled, or a failure that
    ends the router) stays counted, so the gateway session is not saved past it.
    """
    async with events_rx, trio.open_nursery() as nursery:
        async for first in events_rx:
            batch = _waiting(first, events_rx)
            intake.taken += len(batch)  # no checkpoint since the receive: all accounted for
            intake.busy += 1
            dms: list[MessageCreate] = []
            for event in batch:
                if isinstance(event, MessageCreate) and not interactions.is_text_command(event):
                    dms.append(event)
                    continue
                if dms:  # in order: the DMs before this event are stored first
                    await _store_dms(ctx, inbound, dms)
                    dms = []
                try:
                    await _route(event, ctx, inbound, interactions, nursery, intake)
                except Exception as exc:  # trio.Cancelled is a BaseException: it propagates
                    _handler_failed(ctx, event, exc)
            if dms:
                await _store_dms(ctx, inbound, dms)
            intake.busy -= 1
