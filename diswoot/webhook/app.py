"""The HTTP face of the daemon: Chatwoot webhooks, Discord HTTP interactions, health, metrics.

``POST /webhook`` answers 2xx only after the event is stored (or recognised as a duplicate or
as irrelevant); the work itself happens in the outbound queue, so a slow Discord never makes
Chatwoot's 5-second webhook timeout fire.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from typing import Any

from discord_interactions import verify_key
from quart import Response, request
from quart_trio import QuartTrio

from diswoot.bridge.interactions import InteractionRouter
from diswoot.bridge.outbound import OutboundBridge
from diswoot.chatwoot.signature import verify
from diswoot.context import Context
from diswoot.metrics import CONTENT_TYPE

log = logging.getLogger("diswoot.webhook")

MAX_BODY_BYTES = 1024 * 1024
INTERACTION_MAX_AGE = 300.0
_SIGNATURE_HEX = re.compile(r"[0-9a-fA-F]{128}")


def create_app(
    ctx: Context, *, outbound: OutboundBridge, interactions: InteractionRouter
) -> QuartTrio:
    cfg = ctx.cfg
    app = QuartTrio("diswoot")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    if not cfg.webhook_secret and not cfg.webhook_path_token:
        log.warning(
            "POST /webhook accepts unauthenticated requests: set WEBHOOK_SECRET (Chatwoot 4.12+) "
            "or WEBHOOK_PATH_TOKEN"
        )

    def problem(status: int, message: str) -> tuple[dict[str, Any], int]:
        ctx.metrics.webhooks.labels(outcome=str(status)).inc()
        return {"error": message}, status

    async def accept(raw: bytes) -> tuple[dict[str, Any], int]:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return problem(400, "body is not valid JSON")
        if not isinstance(body, dict):
            return problem(400, "body must be a JSON object")
        if _echo_or_note(body):
            ctx.metrics.webhooks.labels(outcome="ignored").inc()
            return {"ok": True, "outcome": "ignored"}, 200
        try:
            outcome = await outbound.accept_webhook(body)
        except ValueError as exc:
            log.warning("rejected a malformed %r webhook: %s", body.get("event"), exc)
            return problem(400, f"malformed {body.get('event')!r} event: {exc}")
        ctx.metrics.webhooks.labels(outcome=outcome).inc()
        return {"ok": True, "outcome": outcome}, 200

    @app.post("/webhook")
    async def webhook() -> tuple[dict[str, Any], int]:
        raw = await _raw_body()
        if cfg.webhook_secret:
            result = verify(
                cfg.webhook_secret,
                request.headers.get("X-Chatwoot-Timestamp"),
                request.headers.get("X-Chatwoot-Signature"),
                raw,
                now=time.time(),
            )
            if not result.ok:
                log.warning("rejected webhook: %s", result.reason)
                return problem(401, "invalid or missing signature")
        elif cfg.webhook_path_token:
            return problem(401, "use the configured webhook path token")
        return await accept(raw)

    @app.post("/webhook/<token>")
    async def webhook_with_token(token: str) -> tuple[dict[str, Any], int]:
        expected = cfg.webhook_path_token
        if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
            return problem(404, "not found")
        raw = await _raw_body()
        return await accept(raw)

    @app.post("/interactions")
    async def discord_interactions() -> Response | tuple[dict[str, Any], int]:
        if not cfg.discord_public_key:
            return {"error": "HTTP interactions are not enabled"}, 404
        raw = await _raw_body()
        signature = request.headers.get("X-Signature-Ed25519", "")
        timestamp = request.headers.get("X-Signature-Timestamp", "")
        if not _signature_ok(raw, signature, timestamp, cfg.discord_public_key):
            ctx.metrics.interactions.labels(kind="bad_signature").inc()
            return {"error": "invalid request signature"}, 401
        try:
            data = json.loads(raw)
        except ValueError:
            return {"error": "body is not valid JSON"}, 400
        if not isinstance(data, dict):
            return {"error": "body must be a JSON object"}, 400
        if data.get("type") == 1:
            ctx.metrics.interactions.labels(kind="ping").inc()
            return {"type": 1}, 200
        answer = await interactions.handle_http(data)
        if answer is None:
            return Response("", status=202)
        return answer, 200

    @app.errorhandler(413)
    async def too_large(_error: Exception) -> Response:
        # Close the connection: the client may still be writing a body we will not read.
        ctx.metrics.webhooks.labels(outcome="413").inc()
        response = Response(
            json.dumps({"error": f"body larger than {MAX_BODY_BYTES} bytes"}),
            status=413,
            content_type="application/json",
        )
        response.headers["Connection"] = "close"
        return response

    @app.get("/health")
    async def health() -> tuple[dict[str, Any], int]:
        ready, body = ctx.health.snapshot(ctx.clock())
        return body, 200 if ready else 503

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(ctx.metrics.render(), status=200, content_type=CONTENT_TYPE)

    return app


def _echo_or_note(body: dict[str, Any]) -> bool:
    """A message event the bridge ignores whatever else it says: checked before parsing it.

    Chatwoot sends one for every forwarded DM (the ``incoming`` echo) and every private note;
    the outbound bridge delivers only public ``outgoing``/``template`` messages.
    """
    return body.get("event") in ("message_created", "message_updated") and (
        body.get("private") is True or body.get("message_type") == "incoming"
    )


async def _raw_body() -> bytes:
    """The request body exactly as received (signatures are computed over these bytes)."""
    data = await request.get_data(cache=False, as_text=False)
    return data if isinstance(data, bytes) else data.encode()


def _signature_ok(raw: bytes, signature: str, timestamp: str, public_key: str) -> bool:
    """Ed25519 over timestamp + raw body (discord-interactions), plus a freshness check."""
    if not _SIGNATURE_HEX.fullmatch(signature) or not timestamp.isdigit():
        return False
    if abs(time.time() - int(timestamp)) > INTERACTION_MAX_AGE:
        return False
    return bool(verify_key(raw, signature, timestamp, public_key))
