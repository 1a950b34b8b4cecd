"""Password rules and hashing, without I/O. Hashing is slow on purpose: call it off the event loop.

Passwords are NFKC-normalised before anything else (so the same password typed on two keyboards,
full-width or composed differently, is the same password), must then be
:data:`MIN_LENGTH`-:data:`MAX_LENGTH` characters, and must not contain control characters. They
are stored only as Argon2id hashes (argon2-cffi, whose C code runs without Python's global lock, so
a worker thread hashing never stalls the event loop; the stdlib's ``hashlib.scrypt`` holds the lock
for its whole run, measured at 50-110 ms). ``scrypt$N$r$p$salt$hash`` hashes are still verified.
"""

import base64
import hashlib
import hmac
import os
import unicodedata

import argon2

from ..codec.native import ProtocolError
from ..codec.text import BAD_TEXT_RE

#: Argon2id cost (RFC 9106's second recommendation, OWASP's minimum): some 40 ms of one core, 19 MiB.
ARGON2 = argon2.PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
#: An Argon2id hash with those parameters of a random string nobody kept: unknown accounts are
#: checked against it, at the same cost as a real one.
DUMMY_HASH = ("$argon2id$v=19$m=19456,t=2,p=1$QESzAk6o3qmIWKKzO2I9OA$"
              "nAEyWHKg+pGQEDjKrYKfuPMT29DnSglRGqfNy0X0NYo")
MIN_LENGTH = 3
MAX_LENGTH = 1024
#: scrypt cost: 2**14 rounds of 8 blocks, 16 MiB of memory and some 50 ms of one core per hash.
SCRYPT_N = 2 ** 14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32


def normalize(password):
    """The password as it is hashed (NFKC), or ProtocolError ``bad-password`` if it breaks the rules."""
    text = unicodedata.normalize("NFKC", password)
    if not MIN_LENGTH <= len(text) <= MAX_LENGTH:
        raise ProtocolError("bad-password",
                            f"a password is {MIN_LENGTH} to {MAX_LENGTH} characters")
    if BAD_TEXT_RE.search(text):
        raise ProtocolError("bad-password", "a password must not contain control characters")
    return text


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def hash_password(password):
    """A storable Argon2id hash of the (normalised) ``password``. Blocking: some 40 ms of CPU."""
    return ARGON2.hash(password)


def scrypt_hash(password, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, salt=None):
    """An scrypt hash (the format of the first stores); holds the GIL while it runs."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                            maxmem=128 * r * (n + p + 2), dklen=HASH_BYTES)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password, stored):
    """Whether ``password`` matches the hash ``stored``, compared in constant time. Blocking."""
    if stored.startswith("$argon2"):
        try:
            return ARGON2.verify(stored, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        n, r, p = int(n), int(r), int(p)
        salt, digest = base64.b64decode(salt), base64.b64decode(digest)
    except ValueError:
        return False
    fresh = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                           maxmem=128 * r * (n + p + 2), dklen=len(digest))
    return hmac.compare_digest(fresh, digest)
