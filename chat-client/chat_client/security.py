"""Sessions, the cross-site request guard and the response headers that keep pages inert.

The session lives in a cookie encrypted and signed with CHAT_SESSION_KEY (Fernet): HttpOnly so page
scripts can't read it, SameSite=Lax so other sites' requests don't carry it, Secure when the request came
over HTTPS. It holds a random session id, which scopes every database query, a CSRF token and the name the
person gave.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_session import Session, get_session
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet

from chat_client import keys
from chat_client.errors import ChatError

COOKIE_NAME = "chat_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NAME_MAX = 60

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def is_https(request: web.Request) -> bool:
    # Behind Azure Container Apps' ingress (or any TLS-terminating proxy) the app sees plain HTTP and the
    # proxy says X-Forwarded-Proto: https. Trusting it is safe here: a forged header can only make the
    # client's own cookie stricter.
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


class SessionStorage(EncryptedCookieStorage):
    """EncryptedCookieStorage whose cookie is Secure exactly when the request came over HTTPS."""

    def __init__(self, key: bytes, *, max_age: int) -> None:
        super().__init__(Fernet(key), cookie_name=COOKIE_NAME, max_age=max_age, httponly=True, samesite="Lax")

    async def save_session(
        self, request: web.Request, response: web.StreamResponse, session: Session
    ) -> None:
        await super().save_session(request, response, session)
        if is_https(request) and COOKIE_NAME in response.cookies:
            response.cookies[COOKIE_NAME]["secure"] = True


@dataclass(frozen=True)
class Identity:
    session_id: str
    csrf_token: str
    name: str | None


async def identity(request: web.Request) -> Identity:
    """Who is asking: the session's id, created on the first visit."""
    session = await get_session(request)
    if "sid" not in session:
        session["sid"] = secrets.token_urlsafe(32)
        session["csrf"] = secrets.token_urlsafe(32)
    # Re-issuing the cookie once a day makes its lifetime (CHAT_SESSION_DAYS) count from the last visit.
    today = int(time.time() // 86400)
    if session.get("day") != today:
        session["day"] = today
    return Identity(session["sid"], session["csrf"], session.get("name"))


async def set_name(request: web.Request, name: str) -> None:
    session = await get_session(request)
    session["name"] = name


def clean_name(raw: object) -> str:
    name = " ".join(str(raw or "").split())
    if not name:
        raise ChatError(400, "name_required", "Please enter your name.")
    if len(name) > NAME_MAX:
        raise ChatError(400, "name_too_long", f"Your name can be at most {NAME_MAX} characters.")
    return name


def _cross_site(request: web.Request, trusts_proxy: bool) -> str | None:
    """Why this state-changing request looks cross-site, or None."""
    # Browsers say where a request comes from; anything but our own pages (or the address bar) is refused.
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"a request from another site ({site})"
    # If the browser sent an Origin header it must match our host (as the browser or our ingress saw it).
    # X-Forwarded-Host counts only behind a configured proxy: from anyone else it is just a claim.
    origin = request.headers.get("Origin")
    if origin is not None:
        hosts = {request.host.lower()}
        forwarded_host = request.headers.get("X-Forwarded-Host")
        if forwarded_host and trusts_proxy:
            hosts.add(forwarded_host.split(",")[0].strip().lower())
        if origin == "null" or urlsplit(origin).netloc.lower() not in hosts:
            return f"a request from another origin ({origin})"
    return None


async def _token_mismatch(request: web.Request) -> str | None:
    session = await get_session(request)
    expected = session.get("csrf")
    # A form field may be a file upload: anything but a string fails the check below.
    given: object = request.headers.get(CSRF_HEADER)
    if given is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        given = (await request.post()).get(CSRF_FIELD)
    if not expected or not isinstance(given, str) or not hmac.compare_digest(given, expected):
        return "a missing or stale CSRF token"
    return None


@web.middleware
async def csrf_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse state-changing requests that another site could have made the browser send.

    Three layers: SameSite=Lax keeps the cookie off cross-site POSTs in current browsers; the Origin and
    Sec-Fetch-Site headers catch cross-site requests even with a cookie; and a per-session token, which
    other sites cannot read, must accompany every POST (form field or X-CSRF-Token header).
    """
    if request.method in UNSAFE_METHODS:
        trusts_proxy = request.app[keys.settings_key].trusted_proxy_hops > 0
        problem = _cross_site(request, trusts_proxy) or await _token_mismatch(request)
        if problem is not None:
            raise ChatError(403, "csrf", f"Refused {problem}. Reload the page and try again.")
    return await handler(request)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: also covers streamed responses, whose headers go out before the handler ends."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    if not request.path.startswith("/static/"):
        # Pages and API answers carry private chats: keep them out of shared caches and the disk cache.
        headers.setdefault("Cache-Control", "no-store")
