"""A local Entra ID stand-in for tests: RSA keys made here, a JWKS served on loopback, tokens signed by us."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

TENANT = "00000000-1111-2222-3333-444444444444"
AUDIENCE = "https://cognitiveservices.azure.com"
ISSUER = f"https://sts.windows.net/{TENANT}/"
APP_ID = "aaaaaaaa-0000-0000-0000-000000000001"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class LocalTenant:
    """Publishes the public half of ``keys`` (kid → private key) at /keys and counts the fetches."""

    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=lambda: {"k1": new_key()})
    fetches: int = 0
    status: int = 200
    url: str = ""

    def app(self) -> web.Application:
        async def jwks(request: web.Request) -> web.Response:
            self.fetches += 1
            if self.status != 200:
                return web.json_response({"error": "unavailable"}, status=self.status)
            published = []
            for kid, key in self.keys.items():
                entry = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
                published.append({**entry, "kid": kid, "use": "sig", "alg": "RS256"})
            return web.json_response({"keys": published})

        app = web.Application()
        app.router.add_get("/keys", jwks)
        return app

    def token(self, now: float, *, kid: str = "k1", key: rsa.RSAPrivateKey | None = None, **claims: Any) -> str:
        """A token as a managed identity gets it for Cognitive Services, valid for an hour from ``now``."""
        payload = {"aud": AUDIENCE, "iss": ISSUER, "iat": int(now), "nbf": int(now), "exp": int(now) + 3600,
                   "appid": APP_ID, "oid": "bbbbbbbb-0000-0000-0000-000000000002", "tid": TENANT, **claims}
        payload = {name: value for name, value in payload.items() if value is not None}
        return jwt.encode(payload, key or self.keys[kid], algorithm="RS256", headers={"kid": kid})


def entra_settings(tenant: LocalTenant, **overrides: Any) -> dict[str, Any]:
    return {"entra_tenant_id": TENANT, "entra_jwks_url": tenant.url + "/keys", **overrides}
