"""The cryptography of credentials: salted scrypt password hashes, opaque random bearer tokens
and the SHA-256 hashes under which tokens are stored. No storage, no HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# scrypt cost: about 50 ms and 16 MiB per hash here, paid once per login, not per request.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
TOKEN_BYTES = 32
ACCESS_PREFIX = "isa_"
API_KEY_PREFIX = "isk_"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        # Same work as a real check, so that response time does not tell which usernames exist.
        hashlib.scrypt(password.encode(), salt=b"0" * SALT_BYTES, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
        return False
    scheme, n, r, p, salt, digest = stored.split("$")
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(candidate, base64.b64decode(digest))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> str:
    """A fresh bearer token: the prefix says its kind (access token or API key) at a glance."""
    return prefix + secrets.token_urlsafe(TOKEN_BYTES)
