"""The wallboard in a real browser, over the real HTTP app and a real engine replaying captures.

Every expected number is read from the ``Board`` snapshot the engine computed, never written
here by hand: the page must show what the daemon says, and keep no counts of its own.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from wallboard_support import ReplayView, Server, StaticView

from pbx_bridge.ami.events import AmiEvent

pytestmark = pytest.mark.needs_chromium

# q_busy_hour, 300 s in: callers waiting, one on hold, one talking past 3 minutes, breaches so far.
BUSY_START = 1795452380.948452  # the capture's first event
BUSY_AT = BUSY_START + 300.0
RED = "rgb(255, 107, 107)"  # .hold .timer.lvl-red
AMBER = "rgb(255, 191, 46)"  # --amber


def _slug(queue: str) -> str:
    return "all" if queue == "*" else queue


def _seconds(text: str) -> int:
    parts = [int(p) for p in text.strip().split(":")]
    total = 0
    for p in parts:
        total = total * 60 + p
    return total


async def _expect() -> Any:
    from playwright.async_api import expect

    return expect


async def _no_scrolling(page: Any) -> None:
    size = await page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.scrollHeight,"
        " document.body.scrollWidth, document.body.scrollHeight]"
    )
    assert max(size[0], size[2]) <= 1920 and max(size[1], size[3]) <= 1080, size


async def _clipped(page: Any, selector: str) -> list[str]:
    """Elements matching ``selector`` that are cut off by their panel or tile, or by the screen."""
    return list(
        await page.evaluate(
            """(sel) => {
                const bad = [];
                for (const el of document.querySelectorAll(sel)) {
                    const r = el.getBoundingClientRect();
                    if (!el.getClientRects().length) continue;  // not displayed at this width
                    const box = el.closest('.qcard, .panel') || document.documentElement;
                    const b = box.getBoundingClientRect();
                    const fits = r.left >= b.left - 1 && r.right <= b.right + 1 && r.top >= b.top - 1
                        && r.bottom <= b.bottom + 1 && r.right <= innerWidth && r.bottom <= innerHeight;
                    if (!fits || el.scrollWidth > el.clientWidth + 1) bad.push(el.dataset.testid || el.className);
                }
                return bad;
            }""",
            selector,
        )
    )


async def test_board_shows_the_numbers_the_engine_computed(open_board: Any, artifacts: Path) -> None:
    expect = await _expect()
    view = ReplayView()
    view.replay("q_busy_hour", until=lambda ev: ev.ts >= BUSY_AT)
    snap = view.snapshot()
    queues = {q["queue"]: q for q in snap["queues"]}
    assert queues["*"]["answered"] > 0 and queues["*"]["abandoned"] > 0 and queues["*"]["waiting"] > 0
    assert snap["holds"] and snap["violations"]

    server = Server(view)
    await server.start()
    try:
        page = await open_board(server.url)
        for name, q in queues.items():
            s = _slug(name)
            for field in ("waiting", "answered", "abandoned", "unanswered", "on_hold", "over_target", "over_max"):
                await expect(page.get_by_test_id(f"{field.replace('_', '-')}-{s}")).to_have_text(str(q[field]))
            await expect(page.get_by_test_id(f"callbacks-overdue-{s}")).to_have_text(str(q["callbacks_overdue"]))
            pct = page.get_by_test_id(f"within-rings-pct-{s}")
            await expect(pct).to_have_text("—" if q["within_rings_pct"] is None else f"{q['within_rings_pct']:g}")
            formula = page.get_by_test_id(f"within-rings-formula-{s}")
            await expect(formula).to_contain_text("≤3声接听 ÷ 已接听")
            await expect(formula).to_contain_text(f"{q['within_rings']} / {q['answered']}")
            if q["avg_tta_s"] is not None:
                tta = page.get_by_test_id(f"avg-tta-{s}")
                await expect(tta).to_have_text(str(round(q["avg_tta_s"])))
                assert float(await tta.get_attribute("data-value")) == q["avg_tta_s"]
            if q["talking_over_target"]:
                await expect(page.get_by_test_id(f"talking-over-target-{s}")).to_contain_text(
                    str(q["talking_over_target"])
                )
            # The longest wait ticks from the snapshot's `ts`: within a second or two of the engine's.
            wait = page.get_by_test_id(f"longest-wait-{s}")
            if q["waiting"]:
                shown = _seconds(await wait.text_content() or "")
                assert q["longest_wait_s"] - 1 <= shown <= q["longest_wait_s"] + 2, (shown, q["longest_wait_s"])
            if name != "*" and q["agents"]:
                for state, n in q["agents"].items():
                    if state != "logged_out" or n:
                        await expect(page.get_by_test_id(f"agents-{state}-{s}")).to_have_attribute("data-value", str(n))

        await expect(page.get_by_test_id("hold-timer")).to_have_count(len(snap["holds"]))
        agents = {a["agent"] for a in snap["agents"]}
        await expect(page.get_by_test_id("agent")).to_have_count(len(agents))
        first = page.get_by_test_id("feed-item").first
        await expect(first).to_have_attribute("data-rule", snap["violations"][0]["rule"])
        await expect(page.get_by_test_id("violations-today")).to_have_attribute(
            "data-value", str(queues["*"]["violations"])
        )
        await expect(page.get_by_test_id("conn-banner")).to_be_hidden()
        await expect(page.get_by_test_id("title")).to_have_text(view.ui["title"])

        await _no_scrolling(page)
        assert await _clipped(page, ".qcard [data-testid], .hold, .agent") == []
        await page.screenshot(path=str(artifacts / "wallboard.png"))
    finally:
        await server.stop()


def _until_hold(ev: AmiEvent) -> bool:
    return ev.name == "Hold"


async def test_hold_timer_turns_amber_then_red_while_the_hold_is_on(open_board: Any) -> None:
    expect = await _expect()
    view = ReplayView()
    view.replay("g", until=_until_hold)  # g holds ~70 s: stop right after the Hold, the hold is on
    (hold,) = view.snapshot()["holds"]
    since = hold["since"]
    # The server's `state` field says "ok" whatever the time: the colour must come from the page's timer.
    view.hold_state_override = "ok"

    server = Server(view)
    await server.start()
    try:
        page = await open_board(server.url)
        timer = page.get_by_test_id("hold-timer")
        row = page.get_by_test_id("hold")
        await expect(timer).to_have_text("0:00")
        await expect(timer).to_have_class(re.compile(r"\blvl-ok\b"))

        view.advance(since + 30)
        await expect(timer).to_have_text(re.compile(r"^0:3[01]$"))
        await expect(timer).to_have_class(re.compile(r"\blvl-ok\b"))

        view.advance(since + 50)
        await expect(timer).to_have_text(re.compile(r"^0:5[01]$"))
        await expect(timer).to_have_class(re.compile(r"\blvl-amber\b"))
        await expect(timer).to_have_css("color", AMBER)
        await expect(row).to_have_class(re.compile(r"\blvl-amber\b"))

        view.advance(since + 61)
        await expect(timer).to_have_text(re.compile(r"^1:0[12]$"))
        await expect(timer).to_have_class(re.compile(r"\blvl-red\b"))
        await expect(timer).to_have_css("color", RED)
        await expect(row).to_have_class(re.compile(r"\blvl-red\b"))
        await expect(page.get_by_test_id("on-hold-all")).to_have_text("1")
    finally:
        await server.stop()


async def test_a_live_violation_appears_in_the_feed(open_board: Any) -> None:
    expect = await _expect()
    view = ReplayView()
    view.replay("g", until=_until_hold)
    (hold,) = view.snapshot()["holds"]
    assert view.snapshot()["violations"] == []

    server = Server(view)
    await server.start()
    try:
        page = await open_board(server.url)
        items = page.get_by_test_id("feed-item")
        await expect(page.get_by_test_id("feed")).to_contain_text("今日暂无违规")
        await expect(items).to_have_count(0)

        view.advance(hold["since"] + 61)  # the engine's ticker raises hold.too_long while the hold is on
        (violation,) = view.snapshot()["violations"]
        assert violation["live"] is True and violation["rule"] == "hold.too_long"

        await expect(items).to_have_count(1)
        item = items.first
        await expect(item).to_have_attribute("data-rule", "hold.too_long")
        await expect(item).to_have_attribute("data-live", "true")
        await expect(item.get_by_test_id("feed-label")).to_have_text("保持超过60秒")
        await expect(item.get_by_test_id("feed-live")).to_have_text("进行中")
        await expect(item).to_contain_text("hold.too_long")  # the rule id, beside its label
        await expect(item).to_have_class(re.compile(r"\bfeed-now\b"))  # the hold is still on

        # The agent resumes and the call ends: the breach stays in the feed, no longer happening now,
        # and the finished call's record adds its own (not live) hold.too_long.
        view.replay("g")
        assert view.snapshot()["holds"] == []
        await expect(page.get_by_test_id("hold")).to_have_count(0)
        live = page.locator('[data-testid="feed-item"][data-live="true"]')
        await expect(live).to_have_count(1)
        await expect(live).not_to_have_class(re.compile(r"\bfeed-now\b"))
        await expect(
            page.locator('[data-testid="feed-item"][data-live="false"][data-rule="hold.too_long"]')
        ).to_have_count(1)
    finally:
        await server.stop()


async def test_language_follows_the_snapshot_and_the_url(open_board: Any, artifacts: Path) -> None:
    expect = await _expect()
    view = ReplayView(lang="zh-CN")
    view.replay("b")  # answered after ~13 s, agent hangs up first: two breaches in the feed
    rules = [v["rule"] for v in view.snapshot()["violations"]]
    assert "hangup.agent_first" in rules and "answer.within_rings" in rules

    server = Server(view)
    await server.start()
    try:
        zh = await open_board(server.url)
        await expect(zh.locator("html")).to_have_attribute("lang", "zh-CN")
        await expect(zh.get_by_test_id("queue-all")).to_contain_text("排队等待")
        await expect(zh.get_by_test_id("within-rings-formula-all")).to_contain_text("≤3声接听 ÷ 已接听")
        await expect(zh.get_by_test_id("feed")).to_contain_text("座席先挂机")
        await expect(zh.get_by_test_id("feed")).to_contain_text("超过3声接听")
        await expect(zh.get_by_test_id("conn-banner")).to_have_text("连接中断，正在重连…")

        en = await open_board(server.url + "?lang=en")
        await expect(en.locator("html")).to_have_attribute("lang", "en")
        await expect(en.get_by_test_id("queue-all")).to_contain_text("Waiting")
        await expect(en.get_by_test_id("queue-all")).not_to_contain_text("排队等待")
        await expect(en.get_by_test_id("within-rings-formula-all")).to_contain_text("≤3 rings ÷ answered")
        await expect(en.get_by_test_id("feed")).to_contain_text("Agent hung up first")
        await expect(en.get_by_test_id("feed")).to_contain_text("Answered after 3 rings")
        await expect(en.get_by_test_id("conn-banner")).to_have_text("Connection lost — reconnecting…")
        await en.screenshot(path=str(artifacts / "wallboard-en.png"))

        # The daemon's setting says English; the URL overrides it back to Chinese.
        view.ui["lang"] = "en"
        await expect(zh.get_by_test_id("queue-all")).to_contain_text("Waiting")  # a running page follows ui.lang
        back = await open_board(server.url + "?lang=zh-CN")
        await expect(back.get_by_test_id("queue-all")).to_contain_text("排队等待")
        await expect(back.get_by_test_id("feed")).to_contain_text("座席先挂机")
    finally:
        await server.stop()


async def test_page_recovers_after_the_server_restarts(open_board: Any) -> None:
    expect = await _expect()
    view = ReplayView()
    view.replay("a")
    before = view.snapshot()["queues"][0]
    assert before["queue"] == "*" and before["answered"] == 1

    server = Server(view)
    await server.start()
    port = server.port
    try:
        page = await open_board(server.url)
        banner = page.get_by_test_id("conn-banner")
        answered = page.get_by_test_id("answered-all")
        await expect(answered).to_have_text("1")
        await expect(banner).to_be_hidden()

        await server.stop()
        await expect(banner).to_be_visible(timeout=8000)
        await expect(banner).to_have_text("连接中断，正在重连…")

        view.replay("b")  # the daemon kept working while the page was cut off
        after = view.snapshot()["queues"][0]
        assert after["answered"] == 2

        await server.start()
        assert server.port == port
        await expect(banner).to_be_hidden(timeout=15000)
        await expect(answered).to_have_text(str(after["answered"]))
        await expect(page.get_by_test_id("feed-item")).to_have_count(len(view.snapshot()["violations"]))
    finally:
        await server.stop()


async def test_a_closed_event_stream_is_opened_again_with_back_off(open_board: Any) -> None:
    """A proxy answering 503 makes EventSource give up (CLOSED): the page itself must retry."""
    expect = await _expect()
    view = ReplayView()
    view.replay("a")
    server = Server(view)
    await server.start()
    refused: list[float] = []

    async def refuse_twice(route: Any) -> None:
        if len(refused) < 2:
            refused.append(time.monotonic())
            await route.fulfill(status=503, content_type="text/plain", body="maintenance")
        else:
            await route.continue_()

    async def setup(page: Any) -> None:
        await page.route("**/api/live/stream", refuse_twice)

    try:
        page = await open_board(server.url, setup=setup)
        await expect(page.get_by_test_id("conn-banner")).to_be_visible()
        await expect(page.get_by_test_id("answered-all")).to_have_text("1", timeout=10000)
        await expect(page.get_by_test_id("conn-banner")).to_be_hidden()
        assert len(refused) == 2
        assert refused[1] - refused[0] >= 0.9  # waited (back-off), did not hammer the server
    finally:
        await server.stop()


def _floor(base: dict[str, Any]) -> dict[str, Any]:
    """A typical floor made from a real snapshot: three queues and twenty agents."""
    snap = dict(base)
    by_name = {q["queue"]: q for q in base["queues"]}
    support = by_name["support"]
    states = ["on_call"] * 9 + ["available"] * 5 + ["ringing"] * 2 + ["paused"] * 3 + ["logged_out"]
    names = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄强", "周杰", "吴霞"]
    names += ["徐丽", "孙涛", "马超", "朱琳", "胡斌", "郭蕾", "何平", "高翔", "林峰", "罗颖"]
    agents = []
    for i, (name, state) in enumerate(zip(names, states, strict=True)):
        queue = ("support", "sales", "billing")[i % 3]
        agents.append(
            {
                "agent": f"PJSIP/{2001 + i}",
                "name": f"{name} {2001 + i}",
                "queue": queue,
                "state": state,
                "reason": "午餐" if state == "paused" and i % 2 else None,
                "since": base["ts"] - 17 * i - 5,
                "seconds": 17 * i + 5,
            }
        )
    queues = [by_name["*"]]
    for name, factor in (("support", 1), ("sales", 2), ("billing", 3)):
        q = dict(support, queue=name)
        q["agents"] = {s: sum(1 for a in agents if a["queue"] == name and a["state"] == s) for s in support["agents"]}
        for field in ("answered", "within_rings", "abandoned", "offered"):
            q[field] = support[field] // factor
        q["within_rings_pct"] = round(100 * q["within_rings"] / q["answered"], 1) if q["answered"] else None
        queues.append(q)
    queues[-1]["unattended_since"] = base["ts"] - 75
    queues[-1]["callbacks_overdue"] = 2
    snap["queues"] = queues
    snap["agents"] = agents
    return snap


async def test_a_typical_floor_fits_the_tv_without_scrolling(open_board: Any, artifacts: Path) -> None:
    """Three queues and twenty agents at 1920×1080: nothing scrolls, nothing is cut off."""
    expect = await _expect()
    view = ReplayView()
    view.replay("q_busy_hour", until=lambda ev: ev.ts >= BUSY_AT)
    snap = _floor(view.snapshot())

    server = Server(StaticView(snap))
    await server.start()
    try:
        for lang in ("zh-CN", "en"):
            page = await open_board(f"{server.url}?lang={lang}")
            await expect(page.get_by_test_id("agent")).to_have_count(20)
            await expect(page.locator(".qcard")).to_have_count(4)
            await expect(page.get_by_test_id("unattended-billing")).to_be_visible()
            await _no_scrolling(page)
            suffix = "" if lang == "zh-CN" else "-en"
            await page.screenshot(path=str(artifacts / f"wallboard-floor{suffix}.png"))
            assert await _clipped(page, ".qcard [data-testid], .hold, .agent, .agent-name, .qname") == []
    finally:
        await server.stop()
