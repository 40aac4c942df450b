"""The two pages in a real headless browser (Debian chromium driven by Playwright).

A customer escalates in one browser context; an agent in another sees the conversation appear
without reloading, claims it and replies; the customer sees the reply without reloading.
Screenshots of both pages go to ``artifacts/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from supportgraph.settings import PROJECT_ROOT
from tests.handoff.helpers import agent_token, live_server
from tests.utils.ci import require

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = PROJECT_ROOT / "artifacts"
HUMAN = "I'd like to talk to a real person please"


def require_browser() -> None:
    """Fail under CI when chromium or Playwright is missing; skip on a developer's laptop."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing = "Playwright for Python (pip install -e '.[dev]')"
    else:
        missing = "" if CHROMIUM.exists() else f"{CHROMIUM} (apt-get install -y chromium)"
    require(not missing, f"{missing} is not installed", needed_by="the browser test")


@pytest.mark.slow
async def test_customer_escalates_agent_replies_live(sqlite_backend: dict[str, Any]) -> None:
    require_browser()
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(exist_ok=True)
    backend = {**sqlite_backend, "sse_heartbeat_seconds": 2.0}
    with live_server(**backend) as live:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                agent_ctx = await browser.new_context(viewport={"width": 1280, "height": 800})
                customer_ctx = await browser.new_context(viewport={"width": 1000, "height": 720})
                agent = await agent_ctx.new_page()
                customer = await customer_ctx.new_page()
                errors: list[str] = []
                for page in (agent, customer):
                    page.on("pageerror", lambda exc: errors.append(str(exc)))

                # The agent signs in first: the queue is empty.
                await agent.goto(f"{live.url}/agent")
                await agent.fill("#token", agent_token(backend, "alice"))
                await agent.click("#sign-in button")
                await expect(agent.locator("#who")).to_have_text("alice (agent)")
                await expect(agent.locator("#live")).to_have_text("● live")
                await expect(agent.locator(".queue-item")).to_have_count(0)
                await agent.evaluate("window.__notReloaded = true")

                # The customer asks a question (streamed, with citations), then for a person.
                await customer.goto(f"{live.url}/")
                chat = customer.locator("#sg-chat textarea")
                await chat.fill("How many days do I have to return something?")
                await chat.press("Enter")
                answer = customer.locator(".sg-assistant").first
                await expect(answer.locator(".sg-citations")).to_contain_text("return")
                await expect(answer).to_contain_text("30 days")
                await chat.fill(HUMAN)
                await chat.press("Enter")
                await expect(customer.locator(".sg-banner")).to_have_attribute(
                    "data-kind", "escalated"
                )
                session_id = await customer.evaluate(
                    "JSON.parse(localStorage.getItem('supportgraph.session')).session_id"
                )
                await customer.evaluate("window.__notReloaded = true")

                # It appears in the agent's queue without a reload.
                item = agent.locator(f'.queue-item[data-session="{session_id}"]')
                await expect(item).to_be_visible(timeout=10_000)
                await expect(item).to_contain_text("requested_human")
                await item.click()
                await expect(agent.locator("#packet")).to_contain_text("asked for a person")
                await expect(agent.locator("#transcript .msg")).to_have_count(4)
                await agent.click("#claim")
                await expect(agent.locator("#conv-claim")).to_have_text("claimed by alice")
                await expect(item).to_contain_text("claimed by alice")
                await agent.fill("#reply", "Hi, I'm Alice from the support team. How can I help?")
                await agent.click("#reply-form button")
                await agent.fill("#note", "internal: offer a discount code")
                await agent.click("#note-form button")
                await expect(agent.locator("#notes li")).to_contain_text("discount code")

                # The customer sees the reply without reloading; never the note.
                reply = customer.locator(".sg-agent")
                await expect(reply).to_contain_text("Alice from the support team")
                await expect(customer.locator(".sg-banner")).to_have_attribute(
                    "data-kind", "claimed"
                )
                assert await customer.evaluate("window.__notReloaded") is True
                await customer.wait_for_timeout(300)
                assert "discount code" not in await customer.content()

                # The customer answers; the agent sees it live in the open conversation.
                await chat.fill("I'd like to change the size of my order")
                await chat.press("Enter")
                await expect(agent.locator("#transcript .msg.customer").last).to_contain_text(
                    "change the size"
                )
                assert await agent.evaluate("window.__notReloaded") is True
                await customer.screenshot(path=str(ARTIFACTS / "customer-widget.png"))
                await agent.screenshot(path=str(ARTIFACTS / "agent-console.png"))

                # The session survives a reload; resolving shows on the customer's side.
                await customer.reload()
                await expect(customer.locator(".sg-msg")).to_have_count(6)
                await expect(customer.locator(".sg-agent")).to_contain_text("Alice")
                await agent.click("#resolve")
                await expect(customer.locator(".sg-banner")).to_have_attribute(
                    "data-kind", "resolved"
                )
                await expect(agent.locator("#conv-status")).to_have_text("resolved")
                await expect(item).to_have_count(0)  # the escalated queue no longer lists it
                assert errors == []
            finally:
                await browser.close()
    for name in ("customer-widget.png", "agent-console.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000
