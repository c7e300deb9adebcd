"""Recovery codes as typed: what counts as one, and how much each is worth (§37)."""

from __future__ import annotations

import math

from api.pages import second_factor
from core import recovery


def test_a_code_is_fifty_bits_shown_in_two_groups() -> None:
    assert recovery.LENGTH * math.log2(len(recovery.ALPHABET)) >= 50
    assert recovery.shown("abcdefghij") == "abcde-fghij"


def test_a_code_is_taken_as_a_person_copies_it() -> None:
    for typed in ("abcde-fghij", "ABCDE FGHIJ", " abcdefghij ", "abcde-fghi j"):
        assert recovery.normalise(typed) == "abcdefghij"
    # Base32 has no 0 or 1: copied by hand they are o and l.
    assert recovery.normalise("h0ll0-w1234") == "holloWl234".lower()


def test_what_is_not_a_code() -> None:
    for typed in ("123456", "abcde-fghi", "abcde-fghijk", "abcde-fgh!j", "abcde-fgh8j", ""):
        assert recovery.normalise(typed) is None


def test_the_second_factor_is_either_an_authenticator_or_a_recovery_code() -> None:
    assert second_factor("123 456") == "123456"
    assert second_factor("ABCDE-FGHIJ") == "abcdefghij"
    assert second_factor("12345") is None
