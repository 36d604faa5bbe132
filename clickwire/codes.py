"""Short codes: random base62 codes and validation of custom aliases.

Length of random codes, from the birthday bound P(any collision among n codes) ≈ 1 - exp(-n²/2N),
N = 62**length, for n = 1e9 links:

    length  N          expected colliding pairs n²/2N   P(any collision)
    8       2.18e14    2,293                              ~1
    10      8.39e17    0.60                               0.45
    11      5.20e19    0.0096                             0.96 %
    12      3.23e21    0.00016                            0.016 %

Links live in a compacted Kafka topic, which has no compare-and-set: two API instances minting the
same code would both "win" and the later write silently replaces the earlier link. The API checks
its materialised table before publishing, but that check races with the topic's propagation lag, so
the code length alone must make collisions impractical. 12 characters (71.5 bits) keeps the chance
of even one collision over a billion links below 2e-4 while staying shorter than a UUID.
"""

from __future__ import annotations

import math
import re
import secrets
import string
from typing import Final

ALPHABET: Final = string.digits + string.ascii_letters  # base62: safe in paths, no escaping
DEFAULT_CODE_LENGTH: Final = 12
MAX_ALIAS_LENGTH: Final = 64

# ASCII only (re.ASCII): \w would otherwise accept any Unicode letter or digit. '.', '/', '%' and
# control characters are outside the class, which rules out path tricks ('..', '/x', '%2e%2e').
_ALIAS_RE: Final = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_ALIAS_LENGTH}}}", re.ASCII)

# Paths the redirector serves itself; an alias must not shadow them (compared case-insensitively
# so that "Healthz" cannot confuse a case-insensitive proxy either).
RESERVED_CODES: Final = frozenset({"healthz", "readyz", "livez", "metrics", "api", "_"})


def new_code(length: int = DEFAULT_CODE_LENGTH) -> str:
    """Return a uniformly random base62 code of `length` characters from the OS CSPRNG."""
    if length < 1:
        raise ValueError("length must be >= 1")
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def valid_code(code: str) -> bool:
    """Return True when `code` is usable as a short code: 1-64 of [A-Za-z0-9_-], not reserved."""
    return _ALIAS_RE.fullmatch(code) is not None and code.lower() not in RESERVED_CODES


def collision_probability(n: int, length: int = DEFAULT_CODE_LENGTH) -> float:
    """Return the birthday-bound probability of at least one collision among `n` random codes."""
    space = float(len(ALPHABET)) ** length
    return -math.expm1(-n * (n - 1) / (2.0 * space))
