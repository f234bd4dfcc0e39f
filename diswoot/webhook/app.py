"""The HTTP face of the daemon: Chatwoot webhooks, Discord HTTP interactions, health, metrics.

``POST /webhook`` answers 2xx only after the event is stored (or recognised as a duplicate or
as irrelevant); the work itself happens in the outbound queue, so a slow Discord never makes
Chatwoot's 5-second webhook timeout fire.  Input never causes a 5xx: a body that is not JSON the
bridge accepts, or has a field of the wrong type, gets a 400 that names the problem.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope
from quart import Response, request
from quart_trio import QuartTrio

from diswoot.bridge.interactions import InteractionRouter
from diswoot.bridge.outbound import OutboundBridge
from diswoot.chatwoot.signature import verify
from diswoot.config import webhook_auth_problem
from diswoot.context import Context
from diswoot.gateway.interaction_body import PING, check_interaction
from diswoot.metrics import CONTENT_TYPE
from diswoot.untrusted import BodyError, FieldError, parse_json
from diswoot.webhook.fast_path import WebhookFastPath, ignorable
from diswoot.webhook.provenance import ConfirmationUnavailable, NotConfirmed, Provenance

if TYPE_CHECKING:
    from nacl.signing import VerifyKey

log = logging.getLogger("diswoot.webhook")

MAX_BODY_BYTES = 1024 * 1024
PATH_PREFIX = "/webhook/"
GATED_ROUTE = "/webhook/~gated"
"""The path Quart (and every log line it writes) sees instead of ``/webhook/<token>``."""
_GATE_PASSED = "diswoot.path_token_ok"
_SIGNATURE_HEX = re.compile(r"[0-9a-fA-F]{128}")
_TIMESTAMP = re.compile(r"[\x21-\x7e]{1,64}")
"""Discord sends Unix seconds; the signature covers whatever it is (printable ASCII, bounded)."""
_EVENT_NAME = re.compile(r"[a-z_]{1,40}")


class PathTokenGate:
    """ASGI middleware: checks ``/webhook/<token>`` before Quart routes the request.

    The request continues as :data:`GATED_ROUTE` with the outcome in the scope, so the token
    never reaches Quart's routing, request objects or error logs.
    """

    def __init__(self, app: ASGIFramework, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and isinstance(path, str) and path.startswith(PATH_PREFIX):
            given = path[len(PATH_PREFIX) :].encode("utf-8", "surrogatepass")
            matches = bool(self.token) and hmac.compare_digest(given, self.token)
            scope = {  # type: ignore[assignment]
                **scope,
                "path": GATED_ROUTE,
                "raw_path": GATED_ROUTE.encode(),
                _GATE_PASSED: matches,
            }
        await self.app(scope, receive, send)


def create_app(
    ctx: Context, *, outbound: OutboundBridge, interactions: InteractionRouter
) -> QuartTrio:
    cfg = ctx.cfg
    app = QuartTrio("diswoot")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    refused = webhook_auth_problem(cfg)
    provenance: Provenance | None = None
    if refused is not None:
        log.error("POST /webhook refuses every request: %s", refused)
    elif not cfg.webhook_secret and not cfg.webhook_path_token:
        provenance = Provenance(ctx)
        log.warning(
            "WEBHOOK_ALLOW_UNAUTHENTICATED=true: POST /webhook accepts unauthenticated requests; "
            "each event is checked against Chatwoot's API before it is stored. Set "
            "WEBHOOK_SECRET (Chatwoot 4.12+) or WEBHOOK_PATH_TOKEN instead"
        )
    key = cfg.discord_public_key
    public_key = verify_key(key) if key else None

    def problem(status: int, message: str) -> tuple[dict[str, Any], int]:
        ctx.metrics.webhooks.labels(outcome=str(status)).inc()
        return {"error": message}, status

    async def accept(raw: bytes) -> tuple[dict[str, Any], int]:
        try:
            body = parse_json(raw)
        except BodyError as exc:
            return problem(400, str(exc))
        if not isinstance(body, dict):
            return problem(400, "body must be a JSON object")
        return await accept_object(body)

    async def accept_object(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        if ignorable(body):
            ctx.metrics.webhooks.labels(outcome="ignored").inc()
            return {"ok": True, "outcome": "ignored"}, 200
        try:
            if provenance is not None:
                body = await provenance.confirm(body)
            outcome = await outbound.intake.accept_webhook(body)
        except NotConfirmed as exc:
            log.warning("unauthenticated %s webhook not stored: %s", _event_name(body), exc)
            return problem(422, str(exc))
        except ConfirmationUnavailable as exc:
            log.warning("unauthenticated %s webhook not stored: %s", _event_name(body), exc)
            return problem(503, "could not check the event with Chatwoot; try again")
        except ValueError as exc:  # FieldError: names the field, carries no content
            log.warning("rejected a malformed %s webhook: %s", _event_name(body), exc)
            return problem(400, str(exc))
        ctx.metrics.webhooks.labels(outcome=outcome).inc()
        return {"ok": True, "outcome": outcome}, 200

    fast = WebhookFastPath(
        app.asgi_app,
        cfg,
        ctx.metrics,
        accept=accept_object,
        paths={"/webhook": None, GATED_ROUTE: _GATE_PASSED},
        max_body=MAX_BODY_BYTES,
        also_ignore=outbound.intake.is_receipt_echo,
    )
    app.asgi_app = PathTokenGate(fast, cfg.webhook_path_token)  # type: ignore[method-assign]

    # Authentic, well-formed webhooks are answered by the fast path; these routes answer the
    # rest (and, in the unauthenticated mode, everything).
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
        elif refused is not None:
            return problem(403, "webhooks are disabled: set WEBHOOK_SECRET or WEBHOOK_PATH_TOKEN")
        return await accept(raw)

    @app.post(GATED_ROUTE)
    async def webhook_with_token() -> tuple[dict[str, Any], int]:
        if request.scope.get(_GATE_PASSED) is not True:
            return problem(404, "not found")
        raw = await _raw_body()
        return await accept(raw)

    @app.post("/interactions")
    async def discord_interactions() -> Response | tuple[dict[str, Any], int]:
        if public_key is None:
            return {"error": "HTTP interactions are not enabled"}, 404
        raw = await _raw_body()
        signature = request.headers.get("X-Signature-Ed25519", "")
        timestamp = request.headers.get("X-Signature-Timestamp", "")
        if not signature_ok(public_key, raw, signature, timestamp):
            ctx.metrics.interactions.labels(kind="bad_signature").inc()
            return {"error": "invalid request signature"}, 401
        try:
            data = parse_json(raw)
            if not isinstance(data, dict):
                raise BodyError("body must be a JSON object")
            kind = check_interaction(data)
        except (BodyError, FieldError) as exc:
            ctx.metrics.interactions.labels(kind="malformed").inc()
            log.warning("rejected a malformed interaction: %s", exc)
            return {"error": str(exc)}, 400
        if kind == PING:
            ctx.metrics.interactions.labels(kind="ping").inc()
            return {"type": 1}, 200
        if not interactions.first_time(str(data["id"])):
            return {"error": "interaction already handled"}, 409
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


def _event_name(body: dict[str, Any]) -> str:
    """The event name for a log line, only when it looks like one (no arbitrary content)."""
    event = body.get("event")
    return repr(event) if isinstance(event, str) and _EVENT_NAME.fullmatch(event) else "?"


async def _raw_body() -> bytes:
    """The request body exactly as received (signatures are computed over these bytes)."""
    data = await request.get_data(cache=False, as_text=False)
    return data if isinstance(data, bytes) else data.encode()


def verify_key(hex_key: str) -> VerifyKey:
    """The application's Ed25519 public key.  PyNaCl (libsodium, 1.2 MB of memory) is loaded
    only when HTTP interactions are enabled; gateway-only daemons never need it."""
    from nacl.signing import VerifyKey

    return VerifyKey(bytes.fromhex(hex_key))


def signature_ok(key: VerifyKey, raw: bytes, signature: str, timestamp: str) -> bool:
    """Discord's Ed25519 signature over timestamp + raw body (discord-api.md §3.4).

    PyNaCl (libsodium) verifies directly: ``discord_interactions.verify_key`` prints every
    failure to stdout.  As there, the timestamp's age is not judged: a host clock a few minutes
    off must not refuse every interaction, and a replayed one changes nothing (its token was
    answered already, commands run once per interaction id, a rating is deduplicated).
    """
    if not _SIGNATURE_HEX.fullmatch(signature) or not _TIMESTAMP.fullmatch(timestamp):
        return False
    from nacl.exceptions import BadSignatureError  # loaded with the key (see verify_key)

    try:
        key.verify(timestamp.encode() + raw, bytes.fromhex(signature))
    except BadSignatureError:
        return False
    return True
