"""The fake Discord's server: a raw ASGI app for the REST routes, beside the fake gateway.

It serves a raw ASGI app on ``http://127.0.0.1:<port>`` through ``hypercorn.trio.serve`` and
runs a fake gateway beside it. Every request is recorded and checked against the vendored
OpenAPI spec; responses carry real ``X-RateLimit-*`` headers and, with ``enforce_limits``, the
per-route (per major parameter) buckets and the global 50/s limit are enforced with 429s.
Behaviour follows discord-api.md §3-§6.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import time
from collections.abc import Mapping
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, unquote

import trio
from hypercorn.trio import serve as hypercorn_serve
from werkzeug.formparser import FormDataParser

from diswoot.testing.fake_discord.records import (
    API_PREFIX,
    Receive,
    RecordedFile,
    RecordedRequest,
    Reply,
    Scope,
    Send,
    Window,
    error_reply,
    memory_stream,
)
from diswoot.testing.fake_discord.routes import DiscordRoutes
from diswoot.testing.loopback import loopback_config


class FakeDiscord(DiscordRoutes):
    """Fake Discord REST + gateway for tests and the sandbox (real sockets on 127.0.0.1)."""

    async def serve(self, nursery: trio.Nursery) -> None:
        """Start the REST server and the gateway in ``nursery``; returns once both listen."""
        config = loopback_config()
        config.h2_max_concurrent_streams = 1000
        app: Any = self._asgi  # a plain ASGI callable; hypercorn's TypedDict scopes aside
        urls: list[str] = await nursery.start(
            partial(hypercorn_serve, app, config, shutdown_trigger=self._stop.wait)
        )
        self._root_url = urls[0].rstrip("/")
        await self.gateway.serve(nursery)

    def close(self) -> None:
        """Ask the HTTP server to shut down gracefully."""
        self._stop.set()

    # -- ASGI --------------------------------------------------------------------------------

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away mid-request: nothing arrived, nothing happens
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            status, headers, payload = await self._handle(scope, bytes(body))
        except Exception as exc:  # a bug in the fake: make it visible to the test
            self.server_errors.append(f"{scope['method']} {scope['path']}: {exc!r}")
            status, headers, payload = 500, {"content-type": "text/plain"}, repr(exc).encode()
        raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": payload})

    async def _handle(self, scope: Scope, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.latency:
            await trio.sleep(self.latency)
        raw_path = scope.get("raw_path") or scope["path"].encode()
        full_path = raw_path.decode("ascii", "replace").split("?", 1)[0]
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["method"] == "GET" and full_path.startswith("/attachments/"):
            return self._serve_attachment(full_path, scope["query_string"].decode())
        if not full_path.startswith(API_PREFIX + "/"):
            return 404, {"content-type": "application/json"}, b'{"message": "404: Not Found"}'
        path = full_path[len(API_PREFIX) :]
        method = scope["method"]
        query = dict(parse_qsl(scope["query_string"].decode(), keep_blank_values=True))
        json_body, form, files = self._decode_body(headers, body)
        op = self.spec.match(method, path)
        record = RecordedRequest(
            method, path, query, headers, json_body, files, op.template if op else None
        )
        self.requests.append(record)
        violations = (
            self.spec.check_request(method, path, query=query, json_body=json_body, form=form)
            if self.check_spec
            else []
        )
        self.violations += violations
        rate_headers: dict[str, str] = {}
        try:
            if op is None:
                raise error_reply(404, 0, "404: Not Found")
            rate_headers = self._rate_limit(method, op.template, path, op.regex.match(path))
            self._apply_fail_rules(method, path)
            if not self._exempt_from_auth(op.template) and headers.get("authorization") != (
                f"Bot {self.token}"
            ):
                raise error_reply(401, 0, "401: Unauthorized")
            if violations:
                raise error_reply(400, 50035, "Invalid Form Body", {"_spec": violations})
            match = op.regex.match(path)
            assert match is not None
            # path parameters arrive percent-decoded, as on any HTTP server; an emoji is
            # kept raw because its encoding is what the reaction routes check
            params = {
                k: v if k == "emoji_name" else unquote(v) for k, v in match.groupdict().items()
            }
            status, result = await self._route(op.operation_id, params, query, json_body, files)
        except Reply as reply:
            status, result = reply.status, reply.body
            rate_headers.update(reply.headers)
        record.status = status
        if status == 429:
            self.responses_429 += 1
        if op is not None and status != 429 and not isinstance(result, bytes) and self.check_spec:
            self.response_violations += self.spec.check_response(method, path, status, result)
        out_headers = dict(rate_headers)
        if isinstance(result, bytes):
            out_headers.setdefault("content-type", "text/html")
            return status, out_headers, result
        if result is None:
            return status, out_headers, b""
        out_headers["content-type"] = "application/json"
        return status, out_headers, json.dumps(result).encode()

    @staticmethod
    def _exempt_from_auth(template: str) -> bool:
        return template.startswith("/interactions/") or "{webhook_token}" in template

    def _decode_body(
        self, headers: Mapping[str, str], body: bytes
    ) -> tuple[Any, dict[str, Any] | None, list[RecordedFile]]:
        content_type = headers.get("content-type", "")
        if not body:
            return None, None, []
        if content_type.startswith("multipart/form-data"):
            mimetype, _, params = content_type.partition(";")
            options = dict(p.strip().split("=", 1) for p in params.split(";") if "=" in p)
            options = {k: v.strip('"') for k, v in options.items()}
            parser = FormDataParser(
                memory_stream, max_form_memory_size=None, max_content_length=None
            )
            _, form_data, file_data = parser.parse(
                io.BytesIO(body), mimetype.strip(), len(body), options
            )
            form = dict(form_data.items())
            files = []
            for name, storage in file_data.items(multi=True):
                try:
                    data = storage.read()
                finally:
                    storage.close()
                files.append(
                    RecordedFile(name, storage.filename or "", storage.content_type or "", data)
                )
            for f in files:
                form[f.name] = f.filename
            payload = form.get("payload_json")
            parsed = None
            if payload is not None:
                try:
                    parsed = json.loads(payload)
                except ValueError:
                    parsed = None
            return parsed, form, files
        try:
            return json.loads(body), None, []
        except ValueError:
            return None, {"_raw": body.decode("utf-8", "replace")}, []

    def _serve_attachment(self, path: str, query: str) -> tuple[int, dict[str, str], bytes]:
        stored = self.attachments.get(unquote(path))
        params = dict(parse_qsl(query))
        if stored is None:
            return 404, {"content-type": "text/plain"}, b"Not Found"
        expected = hmac.new(
            self._cdn_secret,
            f"{unquote(path)}|{params.get('ex')}|{params.get('is')}".encode(),
            hashlib.sha256,
        ).hexdigest()
        if not hmac.compare_digest(expected, params.get("hm", "")):
            return 403, {"content-type": "text/plain"}, b"This content is no longer available."
        content_type, data = stored
        return 200, {"content-type": content_type}, data

    # -- rate limits -------------------------------------------------------------------------

    @staticmethod
    def _route_group(method: str, template: str) -> str:
        if "/reactions" in template:
            return "reactions"
        return f"{method} {template}"

    @staticmethod
    def _major(params: Mapping[str, str]) -> str:
        if "webhook_id" in params and "webhook_token" in params:
            return f"{params['webhook_id']}/{params['webhook_token']}"
        for name in ("channel_id", "guild_id", "webhook_id", "interaction_id"):
            if name in params:
                return params[name]
        return ""

    def _rate_limit(
        self, method: str, template: str, path: str, match: re.Match[str] | None
    ) -> dict[str, str]:
        now = trio.current_time()
        group = self._route_group(method, template)
        bucket_hash = hashlib.sha1(group.encode(), usedforsecurity=False).hexdigest()[:32]
        key = (bucket_hash, self._major(match.groupdict() if match else {}))
        is_global = not self._exempt_from_auth(template)
        if is_global:
            while self._global_sent and self._global_sent[0] <= now - 1.0:
                self._global_sent.popleft()
            if len(self._global_sent) >= self.global_limit:
                self.global_violations += 1
                if self.enforce_limits:
                    retry_after = round(self._global_sent[0] + 1.0 - now, 3)
                    raise Reply(
                        429,
                        {
                            "message": "You are being rate limited.",
                            "retry_after": retry_after,
                            "global": True,
                            "code": 0,
                        },
                        {"x-ratelimit-global": "true", "x-ratelimit-scope": "global"},
                    )
        window = self._windows.get(key)
        if window is None or now >= window.start + self.route_window:
            window = self._windows[key] = Window(now)
        reset_after = window.start + self.route_window - now
        headers = {
            "x-ratelimit-limit": str(self.route_limit),
            "x-ratelimit-bucket": bucket_hash,
            "x-ratelimit-reset-after": f"{reset_after:.3f}",
            "x-ratelimit-reset": f"{time.time() + reset_after:.3f}",
        }
        if window.count >= self.route_limit:
            self.bucket_violations += 1
            if self.enforce_limits:
                headers["x-ratelimit-remaining"] = "0"
                headers["x-ratelimit-scope"] = "user"
                headers["retry-after"] = f"{reset_after:.3f}"
                body = {
                    "message": "You are being rate limited.",
                    "retry_after": round(reset_after, 3),
                    "global": False,
                    "code": 0,
                }
                raise Reply(429, body, headers)
        window.count += 1
        if is_global:
            self._global_sent.append(now)
        headers["x-ratelimit-remaining"] = str(max(self.route_limit - window.count, 0))
        return headers

    def _apply_fail_rules(self, method: str, path: str) -> None:
        for rule in self._fail_rules:
            if rule.times > 0 and rule.method == method and rule.pattern.search(path):
                rule.times -= 1
                if rule.raw_body is not None:
                    raise Reply(rule.status, rule.raw_body)
                if rule.status == 429:
                    headers = {"x-ratelimit-scope": "global" if rule.is_global else "user"}
                    if rule.is_global:
                        headers["x-ratelimit-global"] = "true"
                    body = {
                        "message": "You are being rate limited.",
                        "retry_after": rule.retry_after,
                        "global": rule.is_global,
                        "code": 0,
                    }
                    raise Reply(429, body, headers)
                message = f"{rule.status}: injected failure"
                raise error_reply(rule.status, rule.code if rule.code is not None else 0, message)
