"""Who a Discord user is in Chatwoot: one contact per user, created once, never twice.

The contact (identifier ``discord:{id}``) is created once and kept in the store (``users``); a
422 on creation means it exists already, and a retried job first looks for what its earlier
attempt may have created, so the existing contact is looked up and linked, never made again.
"""

from __future__ import annotations

import logging
from typing import Any

from diswoot.bridge.attempts import Attempt
from diswoot.chatwoot.errors import ChatwootError, ChatwootUnprocessable
from diswoot.context import Context
from diswoot.plugins.base import DiscordUser, Enrichment
from diswoot.store import queries as q

log = logging.getLogger("diswoot.tickets")

DISCORD_CDN = "https://cdn.discordapp.com"


def contact_identifier(discord_id: str) -> str:
    return f"discord:{discord_id}"


def display_name(user: dict[str, Any]) -> str:
    """Global (display) name, else username, else the id."""
    return str(user.get("global_name") or user.get("username") or user["id"])


def avatar_url(user: dict[str, Any]) -> str | None:
    avatar = user.get("avatar")
    if not avatar:
        return None
    ext = "gif" if str(avatar).startswith("a_") else "png"
    return f"{DISCORD_CDN}/avatars/{user['id']}/{avatar}.{ext}"


def contact_attributes(user: dict[str, Any]) -> dict[str, Any]:
    """The custom attributes every Diswoot contact carries (contract: "Contact attributes")."""
    return {
        "discord_id": str(user["id"]),
        "discord_username": str(user.get("username") or ""),
        "discord_display_name": display_name(user),
        "source": "discord",
    }


class Contacts:
    """The Chatwoot contact (and our contact inbox) of each Discord user, cached in SQLite.

    Callers serialise per user (:meth:`diswoot.bridge.tickets.Tickets.ensure_contact`).
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def ensure(self, user: dict[str, Any], attempt: Attempt | None = None) -> tuple[int, str]:
        """The Chatwoot (contact_id, source_id) of a Discord user object; cached.

        ``attempt``: a retried job first looks for the contact (by identifier) and its contact
        inbox that an earlier attempt may have created unseen.
        """
        discord_id = str(user["id"])
        username, name = str(user.get("username") or ""), display_name(user)
        store, now = self.ctx.store, self.ctx.clock()
        row = await store.user(discord_id)
        if row is not None and row.contact_id is not None and row.source_id:
            renamed = (row.username, row.display_name) != (username, name)
            if renamed and user.get("username"):  # a full user object, with news
                await self._refresh_contact(
                    row.contact_id, name=name, custom_attributes=contact_attributes(user)
                )
                await store.call(
                    q.upsert_user, discord_id, now, username=username, display_name=name
                )
            return row.contact_id, row.source_id
        await store.call(q.upsert_user, discord_id, now, username=username, display_name=name)
        if row is not None and row.contact_id is not None:
            contact_id = row.contact_id
            source_id = await self._contact_inbox(discord_id, contact_id, attempt)
        else:
            contact_id, source_id = await self._create_or_find(user, attempt)
        await store.call(q.set_user_contact, discord_id, contact_id, source_id, now)
        log.info("user %s is Chatwoot contact %d", discord_id, contact_id)
        return contact_id, source_id

    async def _contact_inbox(
        self, discord_id: str, contact_id: int, attempt: Attempt | None
    ) -> str:
        """Our inbox's source_id for a known contact whose source_id we lack (mapped from a
        conversation that did not show it, or an earlier answer lost): the one the contact has
        in our inbox, else a new one.  A second contact_inbox would split the user's tickets
        (a locked inbox reuses the conversation of *its* contact_inbox)."""
        chatwoot = self.ctx.chatwoot
        found = await chatwoot.find_contact_by_identifier(contact_identifier(discord_id))
        if found is not None and int(found["id"]) == contact_id:
            source_id = self._our_source_id(found)
            if source_id is not None:
                return source_id
        if attempt is not None:
            await attempt.begin("contact_inbox")
        return await chatwoot.create_contact_inbox(contact_id)

    def _our_source_id(self, contact: dict[str, Any]) -> str | None:
        for link in contact.get("contact_inboxes") or []:
            inbox = link.get("inbox") or {}
            if inbox.get("id") == self.ctx.chatwoot.inbox_id and link.get("source_id"):
                return str(link["source_id"])
        return None

    async def _create_or_find(
        self, user: dict[str, Any], attempt: Attempt | None
    ) -> tuple[int, str]:
        chatwoot = self.ctx.chatwoot
        identifier = contact_identifier(str(user["id"]))
        enrichment = await self._enrich(user)
        attributes = {**enrichment.custom_attributes, **contact_attributes(user)}
        if attempt is not None and attempt.began("contact") is not None:
            found = await chatwoot.find_contact_by_identifier(identifier)
            if found is not None:  # made by the earlier attempt (or by another channel)
                return await self._adopt(found, attributes)
        if attempt is not None:
            await attempt.begin("contact")
        fields: dict[str, Any] = {
            "name": display_name(user),
            "identifier": identifier,
            "avatar_url": avatar_url(user),
            "custom_attributes": attributes,
        }
        try:
            contact = await chatwoot.create_contact(email=enrichment.email, **fields)
        except ChatwootUnprocessable:
            found = await chatwoot.find_contact_by_identifier(identifier)
            if found is not None:
                return await self._adopt(found, attributes)
            if enrichment.email is None:
                raise
            # The identifier is free, so the plugin's email belongs to another contact.
            log.warning("email of user %s belongs to another contact; creating without", user["id"])
            contact = await chatwoot.create_contact(**fields)
        source_id = contact.source_id or await chatwoot.create_contact_inbox(contact.id)
        return contact.id, source_id

    async def _adopt(self, contact: dict[str, Any], attributes: dict[str, Any]) -> tuple[int, str]:
        """Use an existing contact (created earlier, or by the web widget); link our inbox.

        Its name is kept (the other channel may know a better one); our attributes are merged.
        """
        contact_id = int(contact["id"])
        log.info("contact %s exists already (id %d); linking it", contact["identifier"], contact_id)
        await self._refresh_contact(contact_id, custom_attributes=attributes)
        source_id = self._our_source_id(contact)
        if source_id is not None:
            return contact_id, source_id
        return contact_id, await self.ctx.chatwoot.create_contact_inbox(contact_id)

    async def _refresh_contact(self, contact_id: int, **fields: Any) -> None:
        """Best effort: update the contact (Chatwoot merges custom attributes)."""
        try:
            await self.ctx.chatwoot.update_contact(contact_id, **fields)
        except ChatwootError as exc:
            log.warning("could not update contact %d: %s", contact_id, exc)

    async def _enrich(self, user: dict[str, Any]) -> Enrichment:
        """Plugin enrichment (the registry skips a failing or slow plugin, never raises)."""
        who = DiscordUser(
            id=str(user["id"]),
            username=str(user.get("username") or ""),
            global_name=user.get("global_name") or None,
            avatar_url=avatar_url(user),
        )
        return await self.ctx.plugins.enrich(who)
