"""API key storage: keys bound to one portfolio, with no secret at rest, and the replay guard.

A key's secret is derived, never stored: `secret = hex(HMAC_SHA256(master_key, key_id))`.
The server re-derives it on every request from the master key (a setting, or a 0600 file
in development), so a copy of the database alone cannot sign a request. The row keeps only
`secret_hash = sha256(secret)`: when the master key changes, every derived secret changes,
its hash no longer matches, and the key is refused instead of silently verifying against
a different secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
KEY_ID_PREFIX = "tk_"


@dataclass(frozen=True)
class ApiKey:
    """One stored key: who it acts for and what the derived secret must hash to."""

    key_id: str
    portfolio_id: UUID
    secret_hash: str
    label: str | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def derive_secret(master_key: bytes, key_id: str) -> str:
    """The key's secret: a pseudo-random function of its id under the master key."""
    return hmac.new(master_key, key_id.encode("ascii"), hashlib.sha256).hexdigest()


def secret_hash(secret: str) -> str:
    """What the database keeps to recognise the right master key; useless for signing."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def matches(key: ApiKey, master_key: bytes) -> bool:
    """Whether `master_key` derives the secret this key was created with (constant time)."""
    expected = secret_hash(derive_secret(master_key, key.key_id))
    return hmac.compare_digest(expected, key.secret_hash)


def new_key_id() -> str:
    return KEY_ID_PREFIX + secrets.token_urlsafe(15)  # 20 characters, 120 random bits


async def create_key(
    pool: asyncpg.Pool, portfolio_id: UUID, master_key: bytes, label: str | None = None
) -> tuple[str, str]:
    """Create a key for `portfolio_id`; returns (key_id, secret). Show the secret once:
    it is not stored, and only the master key can derive it again."""
    key_id = new_key_id()
    secret = derive_secret(master_key, key_id)
    await pool.execute(
        "INSERT INTO api_keys (key_id, portfolio_id, secret_hash, label) VALUES ($1, $2, $3, $4)",
        key_id,
        portfolio_id,
        secret_hash(secret),
        label,
    )
    return key_id, secret


async def lookup_key(pool: asyncpg.Pool, key_id: str) -> ApiKey | None:
    if not KEY_ID_PATTERN.match(key_id):
        return None
    row = await pool.fetchrow(
        "SELECT key_id, portfolio_id, secret_hash, label, created_at, revoked_at "
        "FROM api_keys WHERE key_id = $1",
        key_id,
    )
    return None if row is None else ApiKey(**dict(row))


async def revoke_key(pool: asyncpg.Pool, key_id: str) -> bool:
    """Revoke a key from now on; False when there is no such (unrevoked) key."""
    done = await pool.fetchval(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL "
        "RETURNING true",
        key_id,
    )
    return bool(done)


# -- replay guard ------------------------------------------------------------------------------


def signature_digest(key_id: str, signature: str) -> bytes:
    return hashlib.sha256(f"{key_id}:{signature}".encode("ascii")).digest()


async def remember_signature(
    pool: asyncpg.Pool, key_id: str, signature: str, expires_at: datetime
) -> bool:
    """Record an accepted signature; False when it was already recorded (a replay)."""
    inserted = await pool.fetchval(
        "INSERT INTO api_request_signatures (digest, key_id, expires_at) VALUES ($1, $2, $3) "
        "ON CONFLICT (digest) DO NOTHING RETURNING true",
        signature_digest(key_id, signature),
        key_id,
        expires_at,
    )
    return bool(inserted)


async def purge_signatures(pool: asyncpg.Pool, before: datetime) -> int:
    """Forget signatures whose timestamps can no longer pass the clock-skew check."""
    status = await pool.execute("DELETE FROM api_request_signatures WHERE expires_at < $1", before)
    return int(status.split()[-1])
