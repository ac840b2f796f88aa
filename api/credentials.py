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


# ---- password policy ---------------------------------------------------------------------------------

PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 200
PASSWORD_MIN_DISTINCT = 5
# The most common passwords of twelve characters or more in public breach lists (compared ignoring
# case). Not a breach database: only what a guesser tries first, so that the lockout's few guesses per
# hour do not find them.
COMMON_PASSWORDS = frozenset({
    "123456789012", "1234567890123", "12345678901234", "123456789123", "123456123456", "123123123123",
    "1q2w3e4r5t6y", "1qaz2wsx3edc", "qwertyuiopas", "qwertyuiop12", "qwertyuiop123", "qwerty123456",
    "qwertyqwerty", "asdfghjkl123", "zxcvbnm12345", "password1234", "password12345", "password123!",
    "passwordpassword", "password1!password", "p@ssw0rd1234", "p@ssword1234", "iloveyou1234",
    "administrator", "administrator1", "admin1234567", "adminadmin123", "letmein12345", "welcome12345",
    "welcome@1234", "changeme1234", "changeme12345", "abcdefghijkl", "abcdefg12345", "abc123abc123",
    "abcd12345678", "000000000000", "987654321012", "0987654321qwerty", "football1234", "baseball1234",
    "sunshine1234", "princess1234", "starwars1234", "superman1234", "trustno1trustno1", "monkey123456",
    "dragon123456", "master123456", "ironsight123", "ironsight1234",
})


def password_problem(password: str, username: str | None = None) -> str | None:
    """Why ``password`` is not good enough for an account named ``username``; None when it is.

    The policy (docs/api.md): 12 to 200 characters, at least 5 different characters (so not one
    character repeated or a short pattern), not containing the username, not one of the most common
    passwords. Never includes the password in its answer.
    """
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"a password needs at least {PASSWORD_MIN_LENGTH} characters"
    if len(password) > PASSWORD_MAX_LENGTH:
        return f"a password has at most {PASSWORD_MAX_LENGTH} characters"
    if len(set(password)) < PASSWORD_MIN_DISTINCT:
        return f"a password needs at least {PASSWORD_MIN_DISTINCT} different characters"
    folded = password.casefold()
    if username and (folded == username.casefold() or (len(username) >= 4 and username.casefold() in folded)):
        return "a password must not contain the username"
    if folded in COMMON_PASSWORDS:
        return "this password is one of the most common ones; choose another"
    return None
