"""Hands gateway events to the component that owns them.

The gateway never calls bridge code; it only sends typed events.  This task receives them in
order and makes each durable (inbound DMs are stored before anything else) or starts its
handler.  Interactions run concurrently in the router's own nursery (each must be answered
within Discord's 3 seconds, whatever else is going on).  When the gateway closes the channel
on shutdown, the router drains what is left and returns.
"""

from __future__ import annotations

import logging

import trio

from diswoot.bridge.inbound import InboundBridge
from diswoot.bridge.interactions import InteractionRouter
from diswoot.context import Context
from diswoot.gateway.events import (
    GatewayEvent,
    InteractionCreate,
    MessageCreate,
    MessageDelete,
    MessageUpdate,
    Ready,
    Resumed,
    TypingStart,
)

log = logging.getLogger("diswoot.router")


async def route_events(
    events_rx: trio.MemoryReceiveChannel[GatewayEvent],
    ctx: Context,
    inbound: InboundBridge,
    interactions: InteractionRouter,
) -> None:
    async with events_rx, trio.open_nursery() as nursery:
        async for event in events_rx:
            match event:
                case MessageCreate():
                    # `!status`, `!close ...` are answered, never forwarded to Chatwoot
                    if interactions.is_text_command(event):
                        nursery.start_soon(interactions.handle_text_command, event)
                    else:
                        await inbound.accept_message(event)
                case MessageUpdate():
                    await inbound.accept_edit(event)
                case MessageDelete():
                    await inbound.accept_delete(event)
                case TypingStart():
                    inbound.user_typing(event)
                case InteractionCreate():
                    nursery.start_soon(interactions.handle_gateway, event.data)
                case Ready():
                    ctx.bot_user_id = event.user_id
                    ctx.application_id = event.application_id or ctx.application_id
                    log.info("gateway ready as %s (fresh session)", event.tag)
                    inbound.session_started(nursery)
                case Resumed():
                    log.info("gateway session resumed (%d events replayed)", event.replayed)
