"""Password rules (NIST SP 800-63B rev. 4) and argon2id hashing.

Length counts the Unicode code points the person typed (NFKC only for hashing and the
strength estimate, where it folds look-alikes); no composition rules; common, guessable and
personal passwords are refused with the reason zxcvbn gives.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import unicodedata
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
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
    words = {
        first_name,
        last_name,
        email,
        local,
        domain.split(".")[0],
        *brand_words(brand),
        *re.split(r"[._+\-]", local),
        *NAME_PARTS.split(f"{first_name} {last_name}"),
    }
    return sorted({w.lower() for w in words if len(w) >= MIN_WORD})


NAME_PARTS = re.compile(r"[\s\-'\u2019.]+")
MIN_WORD = 3  # shorter words match inside too many unrelated ones
PERSONAL = "Don't build your password from your name, email address or the company name."


def brand_words(brand: str) -> set[str]:
    """The company name as people write it into passwords: as is, run together, and the
    product itself ("agentOS", "agentos", "agent-os", "sso")."""
    lowered = brand.lower()
    return {lowered, re.sub(r"[^0-9a-z]", "", lowered), "sso"}


def password_problems(password: str, policy: PasswordPolicy, personal: Iterable[str]) -> list[str]:
    """Every reason the password is refused, in words a person can act on; empty when fine."""
    length = len(password)  # what the person typed: NFKC can make one code point into 18
    if length < policy.min_length:
        return [f"Use at least {policy.min_length} characters (this has {length})."]
    if length > policy.max_length:
        return [f"Use at most {policy.max_length} characters (this has {length})."]
    normalised = normalise(password)
    words = [w.lower() for w in personal]
    lowered = normalised.lower()
    remainder = without_words(lowered, sorted(set(words), key=len, reverse=True))
    if remainder != lowered:
        # Names and the brand are the first things an attacker tries: only what is left
        # counts, and it has to be a good password on its own.
        if len(remainder) < policy.min_length:
            return [f"{PERSONAL} Without them, what is left is too short."]
        weak = _weakness(remainder, words)
        if weak is not None:
            return [f"{PERSONAL} Without them, what is left is too easy to guess. {weak}"]
    weak = _weakness(normalised, words)
    return [] if weak is None else [weak]


# zxcvbn is pure Python (about 50 ms for 72 characters): its own few threads keep it off the
# web app's event loop and cap how many estimates run at once.
STRENGTH_THREADS = min(4, os.cpu_count() or 1)
_strength_pool = ThreadPoolExecutor(max_workers=STRENGTH_THREADS, thread_name_prefix="zxcvbn")


async def check_password(password: str, policy: PasswordPolicy, personal: Iterable[str]) -> list[str]:
    """password_problems, run outside the event loop."""
    return await asyncio.get_running_loop().run_in_executor(
        _strength_pool, password_problems, password, policy, list(personal)
    )


def without_words(text: str, words: Iterable[str]) -> str:
    """`text` with every occurrence of each word (longest first) taken out."""
    for word in words:
        if len(word) >= MIN_WORD:
            text = text.replace(word, "")
    return text


def _weakness(text: str, words: list[str]) -> str | None:
    """zxcvbn's reason and hints when it guesses `text` too easily, else None."""
    result = zxcvbn(text[:ZXCVBN_MAX], user_inputs=words)
    if result["score"] >= MIN_SCORE:
        return None
    feedback = result["feedback"]
    reason = feedback.get("warning") or "This password is too easy to guess."
    hints = " ".join(feedback.get("suggestions") or ["Try a few unrelated words together."])
    return f"{reason} {hints}".strip()


# OWASP's Password Storage Cheat Sheet: equally strong argon2id settings, memory (KiB) by
# iterations. Keycloak's default (t=5, m=7 MiB) is the last row.
OWASP_MIN_MEMORY_KIB = {1: 47104, 2: 19456, 3: 12288, 4: 9216, 5: 7168}


def argon2_problem(time_cost: int, memory_kib: int, parallelism: int) -> str | None:
    """Why these argon2id parameters are weaker than OWASP's minimum, or None."""
    if time_cost < 1 or parallelism < 1:
        return "argon2id needs at least one iteration and one lane"
    needed = OWASP_MIN_MEMORY_KIB[min(time_cost, 5)]
    if memory_kib < needed:
        return (
            f"argon2id with t={time_cost} needs at least m={needed} KiB (OWASP minimum; "
            "e.g. t=2, m=19456 or t=5, m=7168)"
        )
    return None


class Hasher:
    """argon2id; parameters travel in the hash string, so raising them later is safe."""

    def __init__(self, time_cost: int = 2, memory_kib: int = 19456, parallelism: int = 1) -> None:
        problem = argon2_problem(time_cost, memory_kib, parallelism)
        if problem is not None:
            raise ValueError(problem)
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )

    def hash(self, password: str) -> str:
        return self._hasher.hash(normalise(password))

    def verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, normalise(password))
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)


# How much lower than the rest of the process hashing threads run (Linux nice steps).
HASHING_NICENESS = 10


def hashing_pool() -> ThreadPoolExecutor:
    """Threads for argon2, one per core, at a lower CPU priority than the event loop: when
    sign-ins saturate the machine, every other page and step still gets the CPU first."""
    return ThreadPoolExecutor(
        max_workers=os.cpu_count() or 1, thread_name_prefix="argon2", initializer=_lower_priority
    )


def _lower_priority() -> None:
    try:
        # On Linux a thread has its own nice value, addressed by its native id.
        thread = threading.get_native_id()
        niceness = os.getpriority(os.PRIO_PROCESS, thread) + HASHING_NICENESS
        os.setpriority(os.PRIO_PROCESS, thread, min(19, niceness))
    except (AttributeError, OSError):
        pass  # elsewhere the threads simply run at normal priority
