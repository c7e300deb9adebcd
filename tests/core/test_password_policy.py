"""The password rules on their own (docs/security.md §1, §2 and §4): length as typed, strength judged
without the person's name, email and the brand, and the estimate kept off the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

import core.passwords as passwords
from core.passwords import PERSONAL, PasswordPolicy, check_password, password_problems, personal_words

ALICE = personal_words("Alice", "Smith", "alice.smith@agency.example", "agentOS")
POLICY = PasswordPolicy()


def test_length_counts_what_was_typed_not_its_nfkc_form() -> None:
    # U+FDFA is one code point that NFKC turns into 18.
    assert password_problems("\ufdfa", POLICY, []) == ["Use at least 15 characters (this has 1)."]
    assert password_problems("\ufdfa" * 14, POLICY, []) == ["Use at least 15 characters (this has 14)."]
    # A decomposed accent is what was typed too: 13 letters, 1 combining mark and a dash.
    assert password_problems("Lanterne\u0301-Orbit", PasswordPolicy(min_length=16), []) == [
        "Use at least 16 characters (this has 15)."
    ]


def test_the_maximum_counts_what_was_typed() -> None:
    # 200 typed characters whose NFKC form is 3,600 long: within the 256 allowed.
    problems = password_problems("\ufdfa" * 200, POLICY, [])
    assert not any("at most" in p for p in problems)
    assert password_problems("x" * 257, POLICY, []) == ["Use at most 256 characters (this has 257)."]


def test_personal_words_hold_the_name_parts_the_email_and_the_brand() -> None:
    assert {"alice", "smith", "alice.smith", "agentos", "sso"} <= set(ALICE)
    assert {"mary", "jane", "neil"} <= set(
        personal_words("Mary-Jane", "O\u2019Neil", "mj@example.com", "agentOS")
    )
    assert "agentos" in personal_words("A", "B", "a@b.example", "agent OS")


@pytest.mark.parametrize(
    "password",
    [
        "agentOS-password-2024",
        "Alice Smith 2024 agentOS!",
        "alice smith loves agentos",
        "AgentOS-SSO-Alice-Smith-1",
        "alice.smith@agency.example",
    ],
)
def test_passwords_built_from_the_name_and_brand_are_refused(password: str) -> None:
    problems = password_problems(password, POLICY, ALICE)
    assert len(problems) == 1 and problems[0].startswith(PERSONAL), problems
    assert "Without them" in problems[0]  # says why: what is left is not a password


@pytest.mark.parametrize(
    "password",
    [
        "Velvet-Orbit-Lantern-Pixel-42",
        "correct horse battery staple",
        "quartz meadow harbor tulip robin",
        # A name among strong words: what is left is still a good password.
        "alice likes quartz meadows and harbor tulips",
    ],
)
def test_good_passphrases_still_pass(password: str) -> None:
    assert password_problems(password, POLICY, ALICE) == []


def test_what_is_left_is_judged_by_zxcvbn_with_the_words_as_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, list[str]]] = []
    real = passwords.zxcvbn

    def spy(text: str, user_inputs: list[str]) -> dict[str, object]:
        seen.append((text, list(user_inputs)))
        return real(text, user_inputs=user_inputs)

    monkeypatch.setattr(passwords, "zxcvbn", spy)
    assert password_problems("alice likes quartz meadows and harbor tulips", POLICY, ALICE) == []
    assert [text for text, _ in seen] == [
        " likes quartz meadows and harbor tulips",
        "alice likes quartz meadows and harbor tulips",
    ]
    assert all(set(inputs) == set(ALICE) for _, inputs in seen)


async def test_the_strength_check_runs_outside_the_event_loop_thread(zxcvbn_threads: list[int]) -> None:
    loop_thread = threading.get_ident()
    results = await asyncio.gather(
        *(
            check_password(p, POLICY, ALICE)
            for p in ("Velvet-Orbit-Lantern-Pixel-42", "agentOS-password-2024", "passwordpassword123")
        )
    )
    assert results[0] == [] and results[1] and results[2]
    assert zxcvbn_threads and loop_thread not in zxcvbn_threads
    # Capped: a few threads of its own, however many checks arrive together.
    assert len(set(zxcvbn_threads)) <= passwords.STRENGTH_THREADS
