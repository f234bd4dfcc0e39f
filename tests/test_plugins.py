"""Plugin contract, registry (failures, timeouts, entry points) and the Singlty plugin."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import request
from quart_trio import QuartTrio

from diswoot.plugins.base import DiscordUser, DiswootPlugin, Enrichment
from diswoot.plugins.registry import ENTRY_POINT_GROUP, PluginRegistry
from diswoot.plugins.singlty import SingltyPlugin, parse_user

USER = DiscordUser(id="111", username="alice", global_name="Alice A.", avatar_url=None)
API_KEY = "singlty-test-key-0123456789"


class StaticPlugin:
    """Enabled by a flag; returns a fixed enrichment; records its lifecycle."""

    def __init__(self, name: str, result: Enrichment | None, *, enabled: bool = True) -> None:
        self.name = name
        self.result = result
        self.enabled = enabled
        self.shut_down = False
        self.seen: list[DiscordUser] = []

    def init(self, env: Mapping[str, str]) -> bool:
        return self.enabled

    async def enrich_contact(self, user: DiscordUser) -> Enrichment | None:
        self.seen.append(user)
        return self.result

    async def shutdown(self) -> None:
        self.shut_down = True


class FailingPlugin(StaticPlugin):
    def __init__(self, name: str, *, fail_init: bool = False, secret: str = "") -> None:
        super().__init__(name, None)
        self.fail_init = fail_init
        self.secret = secret

    def init(self, env: Mapping[str, str]) -> bool:
        if self.fail_init:
            raise RuntimeError(f"cannot start with key {self.secret}")
        return True

    async def enrich_contact(self, user: DiscordUser) -> Enrichment | None:
        raise RuntimeError(f"backend said no to key {self.secret}")

    async def shutdown(self) -> None:
        raise RuntimeError("shutdown exploded")


class SlowPlugin(StaticPlugin):
    async def enrich_contact(self, user: DiscordUser) -> Enrichment | None:
        await trio.sleep(60)
        return Enrichment(email="late@example.com")


# --------------------------------------------------------------------------- base
def test_display_name_prefers_global_name() -> None:
    assert USER.display_name == "Alice A."
    assert DiscordUser(id="1", username="bob", global_name=None, avatar_url=None).display_name == (
        "bob"
    )
    assert DiscordUser(id="1", username="bob", global_name="", avatar_url=None).display_name == (
        "bob"
    )


def test_enrichment_merge_later_wins() -> None:
    first = Enrichment(email="a@example.com", custom_attributes={"user_id": "1", "tier": "gold"})
    second = Enrichment(email=None, custom_attributes={"user_id": "2"})
    merged = first.merged_with(second)
    assert merged == Enrichment(
        email="a@example.com", custom_attributes={"user_id": "2", "tier": "gold"}
    )
    assert first.custom_attributes == {"user_id": "1", "tier": "gold"}  # not mutated


def test_protocol_is_runtime_checkable() -> None:
    assert isinstance(StaticPlugin("x", None), DiswootPlugin)
    assert isinstance(SingltyPlugin(), DiswootPlugin)
    assert not isinstance(object(), DiswootPlugin)


# --------------------------------------------------------------------------- registry
async def test_enrich_merges_in_order_and_skips_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "sup3r-s3cret-value"
    a = StaticPlugin("a", Enrichment(email="a@example.com", custom_attributes={"k": 1, "x": 1}))
    boom = FailingPlugin("boom", secret=secret)
    b = StaticPlugin("b", Enrichment(custom_attributes={"x": 2}))
    none = StaticPlugin("none", None)
    off = StaticPlugin("off", Enrichment(email="off@example.com"), enabled=False)
    with trio.fail_after(5):
        registry = PluginRegistry.discover(
            {"OTHER_API_KEY": secret}, builtins=[a, boom, b, none, off]
        )
        assert [p.name for p in registry.enabled] == ["a", "boom", "b", "none"]
        with caplog.at_level(logging.WARNING):
            result = await registry.enrich(USER)
    assert result == Enrichment(email="a@example.com", custom_attributes={"k": 1, "x": 2})
    assert a.seen == [USER] and b.seen == [USER]
    assert "boom" in caplog.text and "RuntimeError" in caplog.text
    assert secret not in caplog.text and "***" in caplog.text


async def test_init_failure_is_skipped_without_leaking_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {"SINGLTY_API_KEY": "key-from-the-env-123"}
    ok = StaticPlugin("ok", Enrichment(email="ok@example.com"))
    with caplog.at_level(logging.WARNING):
        registry = PluginRegistry.discover(
            env, builtins=[FailingPlugin("bad", fail_init=True, secret=env["SINGLTY_API_KEY"]), ok]
        )
    assert [p.name for p in registry.enabled] == ["ok"]
    assert "bad" in caplog.text and "key-from-the-env-123" not in caplog.text


async def test_duplicate_names_are_skipped() -> None:
    registry = PluginRegistry.discover(
        {}, builtins=[StaticPlugin("same", None), StaticPlugin("same", None)]
    )
    assert len(registry.enabled) == 1


async def test_slow_plugin_times_out_alone(autojump_clock: trio.testing.MockClock) -> None:
    fast = StaticPlugin("fast", Enrichment(email="fast@example.com"))
    registry = PluginRegistry([SlowPlugin("slow", None), fast])
    with trio.fail_after(30):
        start = trio.current_time()
        result = await registry.enrich(USER, timeout=5.0)
        elapsed = trio.current_time() - start
    assert result == Enrichment(email="fast@example.com")
    assert elapsed == pytest.approx(5.0)


async def test_plugins_run_concurrently(autojump_clock: trio.testing.MockClock) -> None:
    registry = PluginRegistry([SlowPlugin("s1", None), SlowPlugin("s2", None)])
    with trio.fail_after(30):
        start = trio.current_time()
        assert await registry.enrich(USER, timeout=2.0) == Enrichment()
        assert trio.current_time() - start == pytest.approx(2.0)


async def test_no_plugins_gives_empty_enrichment() -> None:
    with trio.fail_after(5):
        assert await PluginRegistry([]).enrich(USER) == Enrichment()


async def test_aclose_shuts_every_plugin_down_even_after_failures() -> None:
    a, b = StaticPlugin("a", None), StaticPlugin("b", None)
    with trio.fail_after(5):
        async with PluginRegistry([a, FailingPlugin("boom"), b]) as registry:
            assert len(registry.enabled) == 3
    assert a.shut_down and b.shut_down


async def test_aclose_runs_even_when_cancelled() -> None:
    a = StaticPlugin("a", None)
    with trio.fail_after(5):
        with trio.CancelScope() as scope:
            async with PluginRegistry([a]):
                scope.cancel()
                await trio.sleep(1)  # cancelled immediately
    assert a.shut_down


def test_default_builtins_include_singlty() -> None:
    assert PluginRegistry.discover({}).enabled == []  # Singlty unconfigured -> disabled
    enabled = PluginRegistry.discover(
        {"SINGLTY_API_URL": "https://api.example", "SINGLTY_API_KEY": API_KEY}
    ).enabled
    assert [p.name for p in enabled] == ["singlty"]


# --------------------------------------------------------------------------- entry points
ENTRY_MODULE = """
from diswoot.plugins.base import Enrichment


class EntryPlugin:
    name = "entry-object"

    def init(self, env):
        return env.get("ENTRY_ENABLED") == "1"

    async def enrich_contact(self, user):
        return Enrichment(custom_attributes={"from_entry_point": user.id})

    async def shutdown(self):
        pass


class FactoryPlugin(EntryPlugin):
    name = "entry-factory"


plugin = EntryPlugin()


def make_plugin():
    return FactoryPlugin()


not_a_plugin = 42
"""


@pytest.fixture
def fake_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake installed distribution whose entry points live in ``diswoot.plugins``."""
    module = "diswoot_test_entry_plugins"
    (tmp_path / f"{module}.py").write_text(ENTRY_MODULE)
    dist = tmp_path / "diswoot_test_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: diswoot-test-plugins\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        f"object = {module}:plugin\n"
        f"factory = {module}:make_plugin\n"
        f"cls = {module}:FactoryPlugin\n"
        f"missing = {module}_nope:plugin\n"
        f"junk = {module}:not_a_plugin\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    return tmp_path


async def test_entry_point_plugins_are_discovered(
    fake_distribution: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        registry = PluginRegistry.discover({"ENTRY_ENABLED": "1"}, builtins=[])
    # the class entry point yields a second "entry-factory" and is skipped as a duplicate
    assert [p.name for p in registry.enabled] == ["entry-object", "entry-factory"]
    assert "missing" in caplog.text and "junk" in caplog.text
    with trio.fail_after(5):
        result = await registry.enrich(USER)
    assert result.custom_attributes == {"from_entry_point": "111"}


async def test_entry_point_plugins_respect_init(fake_distribution: Path) -> None:
    assert PluginRegistry.discover({}, builtins=[]).enabled == []


# --------------------------------------------------------------------------- Singlty
def test_singlty_needs_both_variables() -> None:
    assert not SingltyPlugin().init({})
    assert not SingltyPlugin().init({"SINGLTY_API_URL": "https://x.example"})
    assert not SingltyPlugin().init({"SINGLTY_API_KEY": API_KEY})
    assert not SingltyPlugin().init({"SINGLTY_API_URL": "ftp://x", "SINGLTY_API_KEY": API_KEY})
    assert SingltyPlugin().init({"SINGLTY_API_URL": "https://x.example/", "SINGLTY_API_KEY": "k"})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"data": {"userId": "u-1", "email": "a@example.com"}},
            Enrichment(email="a@example.com", custom_attributes={"user_id": "u-1"}),
        ),
        ({"id": 42, "email": None}, Enrichment(custom_attributes={"user_id": "42"})),
        (
            {"user": {"_id": "abc", "email": "b@example.com"}},
            Enrichment(email="b@example.com", custom_attributes={"user_id": "abc"}),
        ),
        ({"email": "c@example.com"}, Enrichment(email="c@example.com")),
        ({"data": {"email": "not-an-email", "id": True}}, None),
        ({}, None),
        ([1, 2], None),
        (None, None),
    ],
)
def test_parse_user(body: Any, expected: Enrichment | None) -> None:
    assert parse_user(body) == expected


def fake_singlty() -> tuple[QuartTrio, list[dict[str, str]]]:
    """A tiny Singlty backend: a few known users, a 500, and key checking."""
    app = QuartTrio("fake-singlty")
    seen: list[dict[str, str]] = []
    users = {
        "111": {"data": {"userId": "u-111", "email": "alice@example.com"}},
        "222": {"id": 222},
    }

    @app.get("/internal/users/by-discord/<discord_id>")
    async def by_discord(discord_id: str) -> tuple[Any, int]:
        seen.append({"id": discord_id, "key": request.headers.get("x-api-key", "")})
        if request.headers.get("x-api-key") != API_KEY:
            return {"error": "unauthorized"}, 401
        if discord_id == "500":
            return {"error": "boom"}, 500
        if discord_id in users:
            return users[discord_id], 200
        return {"error": "not found"}, 404

    return app, seen


@pytest.fixture
async def singlty_server(
    nursery: trio.Nursery,
) -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    app, seen = fake_singlty()
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    stop = trio.Event()
    urls = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
    try:
        yield urls[0], seen
    finally:
        stop.set()


async def test_singlty_against_a_real_http_server(
    singlty_server: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = singlty_server
    plugin = SingltyPlugin()
    assert plugin.init({"SINGLTY_API_URL": url + "/", "SINGLTY_API_KEY": API_KEY})
    with trio.fail_after(10):
        try:
            found = await plugin.enrich_contact(USER)
            minimal = await plugin.enrich_contact(DiscordUser("222", "bob", None, None))
            unknown = await plugin.enrich_contact(DiscordUser("333", "carol", None, None))
            with pytest.raises(httpx.HTTPStatusError):
                await plugin.enrich_contact(DiscordUser("500", "dave", None, None))
        finally:
            await plugin.shutdown()
    assert found == Enrichment(email="alice@example.com", custom_attributes={"user_id": "u-111"})
    assert minimal == Enrichment(custom_attributes={"user_id": "222"})
    assert unknown is None
    assert [s["id"] for s in seen] == ["111", "222", "333", "500"]
    assert all(s["key"] == API_KEY for s in seen)


async def test_singlty_through_the_registry_with_a_shared_client(
    singlty_server: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = singlty_server
    env = {"SINGLTY_API_URL": url, "SINGLTY_API_KEY": "wrong-key-value"}
    with trio.fail_after(10):
        async with httpx.AsyncClient() as client:
            async with PluginRegistry.discover(env, builtins=[SingltyPlugin(client)]) as registry:
                assert await registry.enrich(USER) == Enrichment()  # 401 -> logged, skipped
            assert not client.is_closed  # injected clients belong to the caller
    assert seen == [{"id": "111", "key": "wrong-key-value"}]


async def test_singlty_escapes_the_id_in_the_path(
    singlty_server: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = singlty_server
    plugin = SingltyPlugin()
    plugin.init({"SINGLTY_API_URL": url, "SINGLTY_API_KEY": API_KEY})
    with trio.fail_after(10):
        try:
            # unescaped, "#" would start a fragment and the server would see "a b"
            assert await plugin.enrich_contact(DiscordUser("a b#c?d", "eve", None, None)) is None
        finally:
            await plugin.shutdown()
    assert seen == [{"id": "a b#c?d", "key": API_KEY}]
