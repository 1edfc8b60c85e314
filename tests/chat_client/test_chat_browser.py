"""Real browsers: Debian's headless Chromium, driven by Playwright (never `playwright install`).

The model is tests/chat_client/scripted_model.py, which streams exactly the text it is given (Markdown
keeps its newlines) over chat completions or the Responses API, and can hold a reply half written.
"""

from __future__ import annotations

import asyncio
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


async def contrast(page: Any, selector: str, prop: str) -> float:
    """The contrast ratio of an element's `prop` colour against the page background (WCAG formula)."""
    return await page.evaluate(
        """([selector, prop]) => {
          const rgb = (text) => text.match(/[\\d.]+/g).slice(0, 3).map(Number);
          const lum = ([r, g, b]) => [r, g, b].map((c) => {
            c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
          }).reduce((sum, c, i) => sum + c * [0.2126, 0.7152, 0.0722][i], 0);
          const fg = lum(rgb(getComputedStyle(document.querySelector(selector))[prop]));
          const bg = lum(rgb(getComputedStyle(document.body).backgroundColor));
          return (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
        }""",
        [selector, prop],
    )


@pytest.mark.browser
async def test_the_defects_a_first_time_user_hit(browser_page, chat_app, upstream):
    page = browser_page
    # The first answer works, the second fails before any text: the newest row is a failed reply.
    model = await upstream(reply_text="An answer. " * 40, script=[200, 503, 503])
    app = await chat_app(model, max_message_chars=2500)
    await start_chatting(page, str(app.client.make_url("/")))
    await page.set_viewport_size({"width": 1000, "height": 700})

    await page.fill("#content", "first question")
    await page.click("#send")
    await page.locator("li.msg.assistant:not(.streaming) .content").wait_for()
    assert await page.evaluate("document.activeElement.id") == "content"  # focus back after the button

    await page.fill("#content", "second question")
    await page.press("#content", "Enter")
    retry = page.locator("li.msg.failed button.retry")
    await retry.wait_for()
    # Defect 1: the Retry button is on screen and not under the sticky message box.
    hit = await page.evaluate(
        """() => {
          const r = document.querySelector('li.msg.failed button.retry').getBoundingClientRect();
          const top = document.getElementById('composer').getBoundingClientRect().top;
          const el = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
          return {hit: el && el.classList.contains('retry'), above: r.bottom <= top};
        }"""
    )
    assert hit == {"hit": True, "above": True}
    # The error text is for a person, with no gateway internals.
    assert "failed (HTTP 503)" in await page.locator("li.msg.failed .note").text_content()
    # A failed retry keeps the row and its Retry; focus returns to the message box.
    await page.mouse.click(*(await center(retry)))
    await page.locator("li.msg.failed button.retry:not([disabled])").wait_for()
    assert await page.evaluate("document.activeElement.id") == "content"
    await page.reload()
    hit = await page.evaluate(
        """() => {
          const r = document.querySelector('li.msg.failed button.retry').getBoundingClientRect();
          return r.bottom <= document.getElementById('composer').getBoundingClientRect().top && r.top >= 0;
        }"""
    )
    assert hit  # also right after a page load

    # Right-to-left text is laid out right-to-left.
    assert await page.get_attribute("#content", "dir") == "auto"
    assert (
        await page.locator("li.msg .content[dir=auto]").count()
        == await page.locator("li.msg .content").count()
    )
    # Code points, as the server counts: 2,100 emoji fit a 2,500-character limit.
    await page.fill("#content", "😀" * 2100)
    assert await page.text_content("#count") == "2,100 / 2,500"
    assert not await page.locator("#send").is_disabled()
    # Over the limit, Enter says why nothing was sent.
    await page.fill("#content", "x" * 2501)
    await page.press("#content", "Enter")
    assert "the limit is 2,500" in await page.text_content("#status")
    assert await page.locator("li.msg.user").count() == 2
    # Screen readers: the list does not announce every token; a polite status and a finished-answer region.
    assert await page.get_attribute("#messages", "aria-live") is None
    assert await page.get_attribute("#announce", "aria-live") == "polite"
    assert await page.get_attribute("#status", "role") == "status"
    assert await page.get_attribute("#chat-list li.current a", "aria-current") == "page"
    # Borders of the message box and of messages: at least 3:1.
    assert await contrast(page, "#content", "borderTopColor") >= 3
    assert await contrast(page, "li.msg.assistant", "borderTopColor") >= 3
    assert page.problems == [] or all("503" in problem for problem in page.problems)

    # On a phone (no Shift key) Enter types a new line, and the layout fits 390 px.
    await on_a_phone_enter_types_a_new_line(page.context.browser, str(app.client.make_url("/")))


async def center(locator: Any) -> tuple[float, float]:
    box = await locator.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


async def on_a_phone_enter_types_a_new_line(chromium: Any, base: str) -> None:
    context = await chromium.new_context(
        viewport={"width": 390, "height": 800}, is_mobile=True, has_touch=True
    )
    try:
        page = await open_page(context, problems := [])
        await start_chatting(page, base)
        await page.fill("#content", "line one")
        await page.press("#content", "Enter")
        await page.keyboard.type("line two")
        assert await page.input_value("#content") == "line one\nline two"
        assert await page.locator("li.msg").count() == 0
        # The layout fits the width: nothing scrolls sideways.
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        assert problems == []
    finally:
        await context.close()


@pytest.mark.browser
async def test_live_updates_from_another_tab_and_after_a_reload(chromium, chat_app):
    async with ScriptedModel(WORDS, hold_after=3).serve() as model:
        app = await chat_app(openai_base_url=model.url)
        context = await chromium.new_context()
        try:
            first = await open_page(context, problems := [])
            chat_url = await start_chatting(first, str(app.client.make_url("/")))
            second = await open_page(context, problems)
            await second.goto(chat_url)
            await second.wait_for_function("() => document.readyState === 'complete'")
            await first.fill("#content", "hello from tab one")
            await first.press("#content", "Enter")
            # Tab two sees the question and the reply as it is written, without a reload.
            await second.locator("li.msg.user .content", has_text="hello from tab one").wait_for()
            await second.wait_for_function(
                "() => document.querySelector('li.msg.assistant.streaming .content')?.textContent.length > 5"
            )
            model.release()
            await second.locator(
                "li.msg.assistant:not(.streaming) .content", has_text="everyone waited"
            ).wait_for()
            assert await second.locator("li.msg").count() == 2
            assert await first.locator("li.msg").count() == 2  # the sending tab shows each message once
            assert await second.text_content("#chat-title") == "hello from tab one"
            assert problems == []
        finally:
            await context.close()

    # A page rendered while a reply is written, whose live stream opens only after the reply ended.
    context = await chromium.new_context()
    try:
        page = await open_page(context, problems := [])
        await a_reply_that_finishes_before_the_live_stream_opens_still_shows(page, chat_app)
        assert problems == []
    finally:
        await context.close()


DOCS = Path(__file__).parents[2] / "chat-client" / "docs"
ANSWER = ["# A plan\n\n", "Run **this**", ":\n\n```python\n", "print('hi')\n", "```\n\n", "- then *relax*\n"]


async def wait_until(predicate: Any, what: str) -> None:
    """Poll a condition the page cannot show (a socket closed on the model's side), for at most 5 s."""
    import asyncio

    for _ in range(100):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.browser
async def test_the_whole_journey(chromium, chat_app, database_url, monkeypatch):
    import asyncio
    import uuid

    import asyncpg

    monkeypatch.setattr("chat_client.replies.RENDER_EVERY", 0.0)  # Markdown after every token
    async with ScriptedModel(ANSWER, hold_after=3).serve() as model:
        app = await chat_app(openai_base_url=model.url)
        base = str(app.client.make_url("/"))
        context = await chromium.new_context(color_scheme="dark", viewport={"width": 1100, "height": 800})
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base.rstrip("/"))
        try:
            page = await open_page(context, problems := [])
            page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            chat_url = await start_chatting(page, base)
            chat_id = chat_url.rsplit("/", 1)[1]

            # A Markdown answer with a code block, and its copy buttons.
            await page.fill("#content", "How do I greet?")
            await page.press("#content", "Enter")
            # Readable while it streams: the Markdown so far is already formatted.
            streaming = page.locator("li.msg.assistant.streaming")
            await streaming.locator("strong", has_text="this").wait_for()
            assert await streaming.locator("h1").text_content() == "A plan"
            model.release()
            answer = page.locator("li.msg.assistant").last
            await answer.locator("pre code.language-python").wait_for()
            assert await answer.locator("h1").text_content() == "A plan"
            assert await answer.locator("li em").text_content() == "relax"
            await answer.get_by_role("button", name="Copy code").click()
            assert await page.evaluate("navigator.clipboard.readText()") == "print('hi')\n"
            await answer.get_by_role("button", name="Copy", exact=True).click()
            assert (await page.evaluate("navigator.clipboard.readText()")).startswith("A plan")

            # Stop a reply while it streams: the model's request is cancelled, the text so far kept.
            model.pieces, model.hold_after, model.gate = WORDS, 4, asyncio.Event()
            await page.fill("#content", "Tell me a story")
            await page.press("#content", "Enter")
            await page.wait_for_function(
                "() => document.querySelector('li.msg.assistant.streaming .content')?.textContent.length > 5"
            )
            await page.click("#stop")
            stopped = page.locator("li.msg.assistant.stopped")
            await stopped.wait_for()
            assert await stopped.locator(".content").text_content() == "".join(WORDS[:4])
            assert "Stopped." in await stopped.locator(".note").text_content()
            await wait_until(lambda: model.disconnects == 1, "the model request to be cancelled")
            stored = await page.evaluate(f"fetch('/api/chats/{chat_id}/messages').then(r => r.json())")
            stored = stored["messages"]
            assert stored[-1]["stopped"] is True and stored[-1]["complete"] is False

            # Regenerate replaces it with a whole answer.
            model.hold_after = None
            await stopped.get_by_role("button", name="Regenerate").click()
            await page.locator(
                "li.msg.assistant:not(.streaming):not(.stopped)", has_text="everyone waited"
            ).wait_for()
            assert await page.locator("li.msg.assistant").count() == 2
            assert await page.evaluate("document.activeElement.id") == "content"

            # Reload in the middle of a reply: what is written so far shows, and the rest arrives live.
            model.hold_after, model.gate = 3, asyncio.Event()
            await page.fill("#content", "Once more")
            await page.press("#content", "Enter")
            await page.wait_for_function(
                "() => document.querySelector('li.msg.assistant.streaming .content')?.textContent.length > 5"
            )
            await page.reload()
            writing = page.locator("li.msg.assistant.streaming .content")
            await page.wait_for_function(
                "() => document.querySelector('li.msg.assistant.streaming .content')?.textContent.length > 5"
            )
            assert await writing.text_content() == "".join(WORDS[:3])
            model.release()
            await (
                page.locator("li.msg.assistant:not(.streaming)", has_text="everyone waited").nth(1).wait_for()
            )

            # Rename.
            await page.click("#rename")
            await page.fill("#rename-input", "Stories and code")
            await page.press("#rename-input", "Enter")
            await page.locator("#chat-title", has_text="Stories and code").wait_for()
            assert await page.text_content("#chat-list li.current a") == "Stories and code"

            # Dark mode, as a person sees it (the README shows this picture), and the same at 390 px.
            assert await page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(20, 23, 28)"
            await page.evaluate("window.scrollTo(0, 0)")
            DOCS.mkdir(exist_ok=True)
            await page.screenshot(path=str(DOCS / "chat-dark.png"))
            await page.set_viewport_size({"width": 390, "height": 844})
            assert await page.evaluate("document.documentElement.scrollWidth") <= 390
            await page.screenshot(path=str(DOCS / "chat-phone-dark.png"))
            await page.set_viewport_size({"width": 1100, "height": 800})

            # Delete: back to the start page, and the rows are gone from the database.
            await page.click("#delete")
            await page.wait_for_url(base)
            assert "Stories and code" not in await page.content()
            connection = await asyncpg.connect(database_url)
            try:
                key = uuid.UUID(chat_id)
                assert await connection.fetchval("SELECT count(*) FROM chats WHERE id = $1", key) == 0
                assert await connection.fetchval("SELECT count(*) FROM messages WHERE chat_id = $1", key) == 0
            finally:
                await connection.close()
            assert problems == []
        finally:
            await context.close()


async def a_reply_that_finishes_before_the_live_stream_opens_still_shows(page: Any, chat_app: Any) -> None:
    async with ScriptedModel(WORDS, hold_after=2).serve() as model:
        app = await chat_app(openai_base_url=model.url)
        await start_chatting(page, str(app.client.make_url("/")))
        await page.fill("#content", "Tell me a story")
        await page.press("#content", "Enter")
        await page.locator("li.msg.assistant.streaming").wait_for()
        # The page is rendered while the reply is written; the reply ends before the live stream connects.
        await page.route(
            "**/live?*",
            lambda route: asyncio.get_running_loop().call_later(
                0.5, lambda: asyncio.ensure_future(route.continue_())
            ),
        )
        await page.reload()
        assert "still being written" in await page.locator("li.msg.assistant").text_content()
        model.release()
        await page.locator("li.msg.assistant:not(.streaming)", has_text="everyone waited").wait_for()
