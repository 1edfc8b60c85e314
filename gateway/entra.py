"""Inbound Entra ID access tokens: what an Azure app sends instead of a static key.

An app using a managed identity asks Entra ID for a token for ``https://cognitiveservices.azure.com`` and sends
it as ``Authorization: Bearer <jwt>``, exactly as it would to Azure OpenAI. Such a token is accepted when

- its RS256 signature verifies with a key of the tenant's JWKS (fetched over HTTP, cached; a token signed with a
  key we do not know triggers one refresh — at most one per ``refresh_interval``, so a flood of forged ``kid``s
  cannot turn the gateway into a JWKS hammer);
- its issuer is the tenant's (v1 ``https://sts.windows.net/{tenant}/`` or v2 ``…/{tenant}/v2.0``) and its audience
  one of the configured ones;
- it has not expired and is already valid (``exp``/``nbf``, with ``leeway`` seconds for clock skew, on the
  injected clock);
- when an allow-list is configured, its ``appid``, ``azp`` or ``oid`` is on it (else any app of the tenant that
  may get a token for the audience gets in).

Every refusal is an ``InvalidToken`` (401) saying why; a JWKS that cannot be fetched at all is a 503 (the
client may retry; nobody was refused for what they sent).

Checking an RS256 signature costs about half a millisecond of CPU — several times the gateway's own work per
request — and a client sends the same token for up to an hour. A token that passed is remembered (the last
``_REMEMBERED`` of them) and only its times are checked again; so a token stays accepted until it expires even if
its signing key is withdrawn meanwhile, as with any cache of verified tokens.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway.errors import GatewayError, Unauthorized

if TYPE_CHECKING:
    from gateway.settings import GatewaySettings

Fetch = Callable[[str], Awaitable[tuple[int | None, bytes]]]

DEFAULT_AUDIENCES = ("https://cognitiveservices.azure.com", "https://cognitiveservices.azure.com/")
_MAX_KEYS_AGE = 24 * 3600.0  # Entra rotates signing keys; a day-old set is refreshed even without a miss
_REMEMBERED = 1024  # verified tokens kept (a few clients' tokens each; about 2 KB apiece)


class InvalidToken(Unauthorized):
    code = "invalid_token"


class SigningKeysUnavailable(GatewayError):
    status = 503
    error_type = "server_error"
    code = "signing_keys_unavailable"


@dataclass(frozen=True, slots=True)
class EntraPolicy:
    issuers: tuple[str, ...]
    audiences: tuple[str, ...]
    jwks_url: str
    allowed_clients: frozenset[str] = frozenset()
    leeway: float = 60.0
    refresh_interval: float = 300.0

    @staticmethod
    def tenant_issuers(tenant_id: str) -> tuple[str, ...]:
        """A tenant's issuers in the public cloud: v1 tokens (what managed identities get for Cognitive
        Services) and v2."""
        return (f"https://sts.windows.net/{tenant_id}/", f"https://login.microsoftonline.com/{tenant_id}/v2.0")

    @staticmethod
    def tenant_jwks_url(tenant_id: str) -> str:
        return f"https://login.microsoftonline.com/{tenant_id}/discovery/v2.0/keys"


class JwksCache:
    """kid → public key, from the JWKS URL: fetched on first use, again on an unknown kid (rate-limited)
    and when a day old."""

    def __init__(self, url: str, fetch: Fetch, now: Callable[[], float], refresh_interval: float) -> None:
        self._url = url
        self._fetch = fetch
        self._now = now
        self._refresh_interval = refresh_interval
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> Any | None:
        key = self._keys.get(kid)
        if key is not None and not self._too_old():
            return key
        async with self._lock:  # one fetch for everyone who missed at once
            if (kid not in self._keys or self._too_old()) and self._may_refresh():
                await self._refresh()
            return self._keys.get(kid)

    def _too_old(self) -> bool:
        return self._fetched_at is not None and self._now() - self._fetched_at > _MAX_KEYS_AGE

    def _may_refresh(self) -> bool:
        return self._fetched_at is None or self._now() - self._fetched_at >= self._refresh_interval

    async def _refresh(self) -> None:
        status, body = await self._fetch(self._url)
        if status != 200:
            if self._fetched_at is None:
                raise SigningKeysUnavailable(f"The signing keys could not be fetched from {self._url}.")
            return  # keep the keys we have; try again after the interval
        self._fetched_at = self._now()
        try:
            document = orjson.loads(body)
            entries = document.get("keys", []) if isinstance(document, dict) else []
        except orjson.JSONDecodeError:
            entries = []
        import jwt  # PyJWT brings cryptography (~9 MB of RSS): loaded only by a gateway that checks tokens

        keys = {}
        for entry in entries:
            if isinstance(entry, dict) and entry.get("kty") == "RSA" and isinstance(entry.get("kid"), str):
                try:
                    keys[entry["kid"]] = jwt.PyJWK(entry, algorithm="RS256").key
                except (jwt.PyJWKError, jwt.InvalidKeyError):
                    continue  # one unusable key must not hide the others
        self._keys = keys


class EntraVerifier:
    def __init__(self, policy: EntraPolicy, fetch: Fetch, *, wall: Callable[[], float],
                 monotonic: Callable[[], float]) -> None:
        self._policy = policy
        self._wall = wall
        self._keys = JwksCache(policy.jwks_url, fetch, monotonic, policy.refresh_interval)
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @staticmethod
    def looks_like_jwt(token: str) -> bool:
        return token.count(".") == 2 and token.startswith("eyJ")

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or InvalidToken saying why it is refused."""
        claims = self._verified.get(token)
        if claims is None:
            claims = await self._verify_signed(token)
            self._verified[token] = claims
            if len(self._verified) > _REMEMBERED:
                self._verified.popitem(last=False)
        else:
            self._verified.move_to_end(token)
        try:
            self._check_times(claims)
        except InvalidToken:
            self._verified.pop(token, None)
            raise
        return claims

    async def _verify_signed(self, token: str) -> dict[str, Any]:
        """Signature, issuer, audience and allow-list: what never changes for a given token."""
        import jwt  # loaded only by a gateway that checks tokens (see JwksCache._refresh)

        policy = self._policy
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise InvalidToken("The bearer token is not a well-formed JWT.") from None
        if header.get("alg") != "RS256":
            raise InvalidToken("The bearer token must be signed with RS256.")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("The bearer token names no signing key (kid).")
        key = await self._keys.key(kid)
        if key is None:
            raise InvalidToken("The bearer token is signed with a key the tenant does not publish.")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=["RS256"], audience=list(policy.audiences), issuer=list(policy.issuers),
                # Time is checked below on the injected clock; PyJWT would read the system's.
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "require": ["exp", "iss", "aud"]},
            )
        except jwt.InvalidSignatureError:
            raise InvalidToken("The bearer token's signature does not verify.") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("The bearer token is for another audience.") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("The bearer token is from another issuer (tenant).") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"The bearer token is not valid: {exc}.") from None
        if policy.allowed_clients and not any(
            claims.get(name) in policy.allowed_clients for name in ("appid", "azp", "oid")
        ):
            raise InvalidToken("The bearer token's application is not allowed to call this gateway.")
        return claims

    def _check_times(self, claims: dict[str, Any]) -> None:
        now, leeway = self._wall(), self._policy.leeway
        expires, not_before = claims.get("exp"), claims.get("nbf")
        if not isinstance(expires, (int, float)) or now > expires + leeway:
            raise InvalidToken("The bearer token has expired.")
        if not_before is not None and (not isinstance(not_before, (int, float)) or now < not_before - leeway):
            raise InvalidToken("The bearer token is not valid yet.")



def policy_from_settings(settings: GatewaySettings) -> EntraPolicy | None:
    """The policy the settings ask for, or None when inbound Entra ID tokens are off (the settings have
    already checked that a tenant, or issuers and a JWKS URL, are given)."""
    tenant = settings.entra_tenant_id
    if not tenant and not settings.entra_issuers:
        return None
    return EntraPolicy(
        issuers=settings.entra_issuers or EntraPolicy.tenant_issuers(tenant or ""),
        audiences=settings.entra_audiences or DEFAULT_AUDIENCES,
        jwks_url=settings.entra_jwks_url or EntraPolicy.tenant_jwks_url(tenant or ""),
        allowed_clients=frozenset(settings.entra_allowed_clients),
        leeway=settings.entra_leeway,
        refresh_interval=settings.entra_jwks_refresh,
    )
