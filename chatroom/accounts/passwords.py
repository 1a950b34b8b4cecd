"""Password rules and hashing, without I/O. Hashing is slow on purpose: call it off the event loop.

Passwords are NFKC-normalised before anything else (so the same password typed on two keyboards,
full-width or composed differently, is the same password), must then be
:data:`MIN_LENGTH`-:data:`MAX_LENGTH` characters, and must not contain control characters. They
are stored only as scrypt hashes with a random salt: ``scrypt$N$r$p$salt$hash`` (base64).
"""

import base64
import hashlib
import hmac
import os
import unicodedata

from ..codec.native import ProtocolError
from ..codec.text import BAD_TEXT_RE

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


def hash_password(password, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, salt=None):
    """A storable hash of the (normalised) ``password``. Blocking: some 50 ms of CPU."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                            maxmem=128 * r * (n + p + 2), dklen=HASH_BYTES)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password, stored):
    """Whether ``password`` matches the hash ``stored``, compared in constant time. Blocking."""
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
