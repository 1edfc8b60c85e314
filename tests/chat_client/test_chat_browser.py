"""Real browsers: Debian's headless Chromium, driven by Playwright (never `playwright install`).

The model is tests/chat_client/scripted_model.py, which streams exactly the text it is given (Markdown
keeps its newlines) over chat completions or the Responses API, and can hold a reply half written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.chat_client.chat_helpers import in_ci
from tests.chat_client.scripted_model import ScriptedModel

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
WORDS = [word if i == 0 else " " + word for i, word in enumerate(STORY.split())]


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium (scripts/bootstrap.sh --browser does)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def open_page(context: Any, problems: list[str]) -> Any:
    page = await context.new_page()
    page.set_default_timeout(10_000)
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    return page


@pytest.fixture
async def browser_page(chromium: Any) -> AsyncIterator[Any]:
    context = await chromium.new_context()
    problems: list[str] = []
    page = await open_page(context, problems)
    page.problems = problems
    yield page
    await context.close()


async def start_chatting(page: Any, base: str) -> str:
    await page.goto(base)
    await page.fill("#name", "Ada")
    await page.click("text=Start chatting")
    await page.wait_for_url("**/chats/*")
    return page.url


@pytest.mark.browser
@pytest.mark.parametrize("model_api", ["chat", "responses"])
async def test_start_a_chat_watch_the_reply_stream_reload_and_see_the_history(
    browser_page, chat_app, model_api
):
    page = browser_page
    async with ScriptedModel(WORDS, hold_after=5).serve() as model:
        app = await chat_app(openai_base_url=model.url, model_api=model_api)
        chat_url = await start_chatting(page, str(app.client.make_url("/")))

        await page.fill("#content", "Tell me a story")
        await page.press("#content", "Enter")

        # While the reply streams: part of the text is on the page, and the page still responds.
        streaming = page.locator("li.msg.assistant.streaming .content")
        await page.wait_for_function(
            "() => document.querySelector('li.msg.assistant.streaming .content')?.textContent.length > 10"
        )
        assert await streaming.text_content() == "".join(WORDS[:5])
        await page.fill("#content", "typing while it streams")
        assert await page.input_value("#content") == "typing while it streams"
        await page.fill("#content", "")
        model.release()

        done = page.locator("li.msg.assistant:not(.streaming) .content")
        await done.wait_for()
        assert await done.text_content() == STORY
        assert await page.locator("li.msg.user .content").text_content() == "Tell me a story"
        assert await page.locator("#chat-title").text_content() == "Tell me a story"
        # The model was asked through the API the setting names.
        kind, body = model.requests[-1]
        assert kind == model_api
        if model_api == "responses":
            assert body["input"] == [{"role": "user", "content": "Tell me a story"}]
            assert body["instructions"] and body["store"] is False
        else:
            assert body["messages"][-1] == {"role": "user", "content": "Tell me a story"}

        await page.reload()
        assert page.url == chat_url
        contents = await page.locator("li.msg .content").all_text_contents()
        assert contents == ["Tell me a story", STORY]
        assert await page.locator("#chat-list li.current a").text_content() == "Tell me a story"
        assert "Ada" in await page.locator(".who").text_content()
        assert page.problems == []
