"""Sessions, escaping, the cross-site guard and the headers that keep the pages inert."""

from __future__ import annotations

from http.cookies import SimpleCookie

from tests.chat_client.chat_helpers import ChatBrowser

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


async def test_markup_in_messages_titles_and_names_renders_as_text(chat_app, upstream):
    model = await upstream(reply_text="<b>bold</b> <script>evil()</script>")
    browser = await (await chat_app(model)).open(name=XSS)
    chat_id = await browser.new_chat(title=XSS)
    await browser.send(chat_id, XSS)

    for path in ["/", f"/chats/{chat_id}"]:
        page = await (await browser.client.get(path)).text()
        assert "<script>alert" not in page and "<img src=x" not in page and "<script>evil" not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page or "&lt;script&gt;alert" in page
    page = await (await browser.client.get(f"/chats/{chat_id}")).text()
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    # Pages may load scripts only from the app itself, and never inline ones.
    response = await browser.client.get("/")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"


async def test_json_api_returns_content_verbatim_for_the_page_to_insert_as_text(chat_app, upstream):
    browser = await (await chat_app(await upstream())).open()
    chat_id = await browser.new_chat()
    await browser.send(chat_id, XSS)
    assert (await browser.messages(chat_id))[0]["content"] == XSS
    response = await browser.client.get(f"/api/chats/{chat_id}/messages")
    assert response.content_type == "application/json"


async def test_session_cookie_is_encrypted_httponly_lax_and_secure_behind_https(chat_app, second_browser):
    browser = await chat_app()
    response = await browser.client.get("/")
    cookie = SimpleCookie(response.headers["Set-Cookie"])["chat_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert not cookie["secure"]  # plain HTTP (local demo): a Secure cookie would never come back
    assert cookie["max-age"] == str(30 * 86400)
    assert "sid" not in cookie.value and len(cookie.value) > 100  # Fernet token, not readable JSON

    other = await second_browser(browser)
    behind_tls = await other.client.get("/", headers={"X-Forwarded-Proto": "https"})
    cookie = SimpleCookie(behind_tls.headers["Set-Cookie"])["chat_session"]
    assert cookie["secure"]


async def test_tampered_or_foreign_cookie_gives_a_fresh_empty_session(chat_app, upstream, second_browser):
    alice = await (await chat_app(await upstream())).open("Alice")
    chat_id = await alice.new_chat()
    stolen = alice.client.session.cookie_jar.filter_cookies(alice.client.make_url("/"))["chat_session"].value

    mallory = await second_browser(alice)
    tampered = stolen[:-8] + ("A" * 8 if not stolen.endswith("A" * 8) else "B" * 8)
    mallory.client.session.cookie_jar.update_cookies({"chat_session": tampered}, mallory.client.make_url("/"))
    await mallory.open(name=None)
    assert await mallory.chats() == []
    assert (await mallory.client.get(f"/api/chats/{chat_id}/messages")).status == 404


async def test_state_changing_requests_need_the_session_csrf_token(chat_app):
    browser = await (await chat_app()).open()
    chat_id = await browser.new_chat()
    cases = [
        ("/api/chats", {}, {}),
        ("/api/chats", {}, {"X-CSRF-Token": "forged"}),
        (f"/api/chats/{chat_id}/messages", {"content": "hi"}, {}),
    ]
    for path, body, headers in cases:
        response = await browser.client.post(path, json=body, headers=headers)
        assert response.status == 403, path
        error = (await response.json())["error"]
        assert error["code"] == "csrf" and "Reload the page" in error["message"]
    # A form without the token: an HTML error page, and no chat was made.
    before = len(await browser.chats())
    page = await browser.client.post("/chats", data={"name": "Eve"})
    assert page.status == 403 and "CSRF" in await page.text()
    assert len(await browser.chats()) == before
    # Another browser's token is no good either.
    other = await (await chat_app()).open()
    response = await browser.client.post("/api/chats", json={}, headers={"X-CSRF-Token": other.csrf})
    assert response.status == 403


async def test_cross_site_requests_are_refused_even_with_the_token(chat_app):
    browser = await (await chat_app()).open()
    host = browser.client.make_url("/").host
    port = browser.client.make_url("/").port
    refused = [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": f"http://{host}:{port + 1}"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ]
    for extra in refused:
        response = await browser.client.post("/api/chats", json={}, headers=browser.headers(**extra))
        assert response.status == 403, extra
        assert "another" in (await response.json())["error"]["message"]
    allowed = [
        {},
        {"Origin": f"http://{host}:{port}", "Sec-Fetch-Site": "same-origin"},
    ]
    for extra in allowed:
        response = await browser.client.post("/api/chats", json={}, headers=browser.headers(**extra))
        assert response.status == 201, extra
    # Without a configured proxy, X-Forwarded-Host is just a claim of whoever sent the request.
    behind_ingress = {"Origin": "https://chat.example.com", "X-Forwarded-Host": "chat.example.com"}
    response = await browser.client.post("/api/chats", json={}, headers=browser.headers(**behind_ingress))
    assert response.status == 403


async def test_x_forwarded_host_counts_only_behind_a_configured_proxy(chat_app):
    browser = await (await chat_app(trusted_proxy_hops=1)).open()
    behind_ingress = {"Origin": "https://chat.example.com", "X-Forwarded-Host": "chat.example.com"}
    response = await browser.client.post("/api/chats", json={}, headers=browser.headers(**behind_ingress))
    assert response.status == 201
    forged = {"Origin": "https://evil.example", "X-Forwarded-Host": "chat.example.com"}
    response = await browser.client.post("/api/chats", json={}, headers=browser.headers(**forged))
    assert response.status == 403


async def test_reads_work_without_a_token_but_are_scoped(chat_app):
    browser = ChatBrowser((await chat_app()).client, None)  # type: ignore[arg-type]
    response = await browser.client.get("/api/chats")
    assert response.status == 200 and await response.json() == {"chats": []}
