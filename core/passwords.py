"""Password rules (NIST SP 800-63B rev. 4) and argon2id hashing.

Length counts Unicode code points after NFKC normalisation; no composition rules; common,
guessable and personal passwords are refused with the reason zxcvbn gives.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn

ZXCVBN_MAX = 72  # zxcvbn refuses longer input; the first 72 characters decide the estimate
MIN_SCORE = 3


@dataclass(frozen=True)
class PasswordPolicy:
    min_length: int = 15
    max_length: int = 256


def normalise(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def personal_words(first_name: str, last_name: str, email: str, brand: str) -> list[str]:
    local, _, domain = email.lower().partition("@")
    words = {first_name, last_name, email, local, domain.split(".")[0], brand,
             *re.split(r"[._+\-]", local)}
    return sorted(w.lower() for w in words if len(w) >= 3)


def password_problems(password: str, policy: PasswordPolicy, personal: Iterable[str]) -> list[str]:
    """Every reason the password is refused, in words a person can act on; empty when fine."""
    password = normalise(password)
    length = len(password)
    if length < policy.min_length:
        return [f"Use at least {policy.min_length} characters (this has {length})."]
    if length > policy.max_length:
        return [f"Use at most {policy.max_length} characters (this has {length})."]
    words = list(personal)
    lowered = password.lower()
    remainder = lowered
    for word in sorted(words, key=len, reverse=True):
        if len(word) >= 4:
            remainder = remainder.replace(word, "")
    if remainder != lowered and len(remainder) < policy.min_length // 2:
        return ["Don't build your password from your name, email address or the company name."]
    result = zxcvbn(password[:ZXCVBN_MAX], user_inputs=words)
    if result["score"] >= MIN_SCORE:
        return []
    feedback = result["feedback"]
    reason = feedback.get("warning") or "This password is too easy to guess."
    hints = " ".join(feedback.get("suggestions") or ["Try a few unrelated words together."])
    return [f"{reason} {hints}".strip()]


class Hasher:
    """argon2id; parameters travel in the hash string, so raising them later is safe."""

    def __init__(self, time_cost: int = 2, memory_kib: int = 19456, parallelism: int = 1) -> None:
        if time_cost < 2 or memory_kib < 19456 or parallelism < 1:
            raise ValueError("argon2id below the OWASP minimum (t=2, m=19456 KiB, p=1)")
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib,
                                      parallelism=parallelism, type=Type.ID)

    def hash(self, password: str) -> str:
        return self._hasher.hash(normalise(password))

    def verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, normalise(password))
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)
