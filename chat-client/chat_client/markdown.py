"""Model answers as HTML: Markdown rendered by markdown-it-py, then sanitised by nh3 (ammonia).

Two layers, because the text comes from a model that anyone can talk into writing anything:
- markdown-it with `html` off: raw HTML in the text is shown as text, never passed through; its link
  validator refuses `javascript:`, `vbscript:`, `file:` and `data:` URLs. Images are switched off: an image
  would make the browser fetch a URL the model chose (a tracking pixel, or chat text smuggled into a query
  string); `![alt](url)` shows as "!" and a link instead.
- nh3 then keeps only the tags and attributes below and only http(s)/mailto links, whatever markdown-it
  produced, and marks links rel="noopener noreferrer nofollow".
"""

from __future__ import annotations

import nh3
from markdown_it import MarkdownIt

_MARKDOWN = (
    MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    .enable(["table", "strikethrough"])
    .disable("image")
)

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code", "pre",
    "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},  # language-python, from ```python fences
    "ol": {"start"},
}  # no `style`: the page's CSP forbids inline styles (column alignment is lost, nothing else)
ALLOWED_URL_SCHEMES = {"http", "https", "mailto"}


def render_markdown(text: str) -> str:
    html = _MARKDOWN.render(text).strip()
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=ALLOWED_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
