"""Password hashing and bearer tokens.

Passwords are hashed with Argon2id. Access tokens are short-lived HS256 JWTs
that carry user, tenant, role and a session id; logging out revokes the
session, which stops every access token of it at once.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.errors import Unauthorized

ROLES = ("platform_admin", "tenant_admin", "desk_head", "trader", "viewer")
_RANK = {role: len(ROLES) - index for index, role in enumerate(ROLES)}

_hasher = PasswordHasher()
# Verifying against this keeps an unknown username as slow as a wrong password,
# so response time does not tell which usernames exist.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(
            password_hash
        )
    except (VerificationError, InvalidHashError):
        return False


def sip_ha1(username: str, realm: str, password: str) -> str:
    """The digest HA1 Asterisk checks SIP logins against (RFC 2617)."""
    return hashlib.md5(
        f"{username}:{realm}:{password}".encode(), usedforsecurity=False
    ).hexdigest()


def role_at_least(role: str, minimum: str) -> bool:
    return _RANK.get(role, 0) >= _RANK[minimum]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the verified claims of the bearer token."""

    user_id: str
    tenant_id: str
    role: str
    username: str
    session_id: str
    impersonator_id: str | None = None
    issued_at: float = 0.0

    def at_least(self, minimum: str) -> bool:
        return role_at_least(self.role, minimum)


class TokenCodec:
    def __init__(self, secret: str, issuer: str, audience: str, ttl: int) -> None:
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self.ttl = ttl

    def issue(self, principal: Principal) -> str:
        # Fractional seconds (NumericDate allows them) so that a password
        # change ends even the tokens issued earlier in the same second.
        issued = time.time()
        now = int(issued)
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": principal.user_id,
            "tenant_id": principal.tenant_id,
            "role": principal.role,
            "username": principal.username,
            "sid": principal.session_id,
            "iat": issued,
            "exp": now + self.ttl,
        }
        if principal.impersonator_id:
            claims["impersonator_id"] = principal.impersonator_id
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def decode(self, token: str) -> Principal:
        try:
            # Pinning the algorithm list is what rejects "alg": "none" and
            # algorithm-confusion tokens.
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "aud", "iss", "sid"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the token has expired; log in again") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("the token is not valid") from exc
        try:
            return Principal(
                user_id=str(claims["sub"]),
                tenant_id=str(claims["tenant_id"]),
                role=str(claims["role"]),
                username=str(claims["username"]),
                session_id=str(claims["sid"]),
                impersonator_id=claims.get("impersonator_id"),
                issued_at=float(claims["iat"]),
            )
        except KeyError as exc:
            raise Unauthorized("the token is missing a claim") from exc
