"""One real browser: Debian's headless Chromium, driven by Playwright (never `playwright install`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.chat_client.chat_helpers import in_ci

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STORY = "Once upon a time a tiny model answered every question one word at a time and everyone waited"


@pytest.fixture
async def browser_page() -> AsyncIterator[object]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium (scripts/bootstrap.sh --browser does)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            page = await context.new_page()
            page.set_default_timeout(15_000)
            yield page
            await context.close()
        finally:
            await browser.close()


@pytest.mark.browser
async def test_start_a_chat_watch_the_reply_stream_reload_and_see_the_history(
    browser_page, chat_app, upstream
):
    page = browser_page
    model = await upstream(reply_text=STORY, token_delay=0.12)
    app = await chat_app(model)
    base = str(app.client.make_url("/"))
    problems: list[str] = []
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))

    await page.goto(base)
    await page.fill("#name", "Ada")
    await page.click("text=Start chatting")
    await page.wait_for_url("**/chats/*")
    chat_url = page.url

    await page.fill("#content", "Tell me a story")
    await page.press("#content", "Enter")

    # While the reply streams: part of the text is on the page, and the page still responds.
    streaming = page.locator("li.msg.assistant.streaming .content")
    await page.wait_for_function(
        "() => document.querySelector('li.msg.assistant.streaming .content')?.textContent.length > 0"
    )
    partial = await streaming.text_content()
    assert partial and STORY.startswith(partial.strip()) and partial.strip() != STORY
    await page.fill("#content", "typing while it streams")
    assert await page.input_value("#content") == "typing while it streams"
    await page.fill("#content", "")

    done = page.locator("li.msg.assistant:not(.streaming) .content")
    await done.wait_for()
    assert await done.text_content() == STORY
    assert await page.locator("li.msg.user .content").text_content() == "Tell me a story"
    assert await page.locator("#chat-title").text_content() == "Tell me a story"

    await page.reload()
    assert page.url == chat_url
    contents = await page.locator("li.msg .content").all_text_contents()
    assert contents == ["Tell me a story", STORY]
    assert await page.locator("#chat-list li.current a").text_content() == "Tell me a story"
    assert "Ada" in await page.locator(".who").text_content()
    assert problems == []
