"""Personal data in free text: emails, phone numbers, card numbers, IBANs, bearer tokens.

Log lines carry what users send (paths, cache keys, signup emails) and what drivers
say about it (exception messages), so personal data is masked by its shape, not by
where it appears. Every pattern is anchored on boundaries, and the look-alikes that
fill logs are rejected by a check rather than by a looser pattern:

- card numbers: 13-19 digits (single spaces or dashes between groups), a card
  network's first digits (3-6, or Mastercard's 2221-2720, so ``2026...``
  timestamps and ``17...`` epoch milliseconds never qualify) and a valid Luhn sum;
- IBANs: two capital letters, two check digits, 11-30 letters or digits (printed in
  groups of four or not) and a valid ISO 13616 mod-97 checksum;
- phone numbers: international (``+`` and 8-15 digits), North American
  (``(415) 555-2671``, ``415-555-2671``, ``415.555.2671``) or national with a trunk
  zero and 9-12 digits (``030 12345678``, ``0151-23456789``). A bare digit run
  without ``+`` or separators is an id, a count or a timestamp, not a phone number;
- emails: ``local@domain.tld``;
- bearer tokens: the credential (8 characters or more) after ``Bearer`` (any case;
  not an RFC 6750 ``realm=``/``error=`` parameter), and anything JWT-shaped
  (``eyJ...``.``...``.``...``).

:func:`may_hold_personal_data` is the cheap test run on every log line (substring
tests and three regex searches that start with a character class); only a line it
flags goes through :func:`mask_personal_data`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

EMAIL_MASK = "[email]"
PHONE_MASK = "[phone]"
CARD_MASK = "[card]"
IBAN_MASK = "[iban]"
TOKEN_MASK = "[token]"  # noqa: S105 (the placeholder, not a token)

# Possessive quantifiers: no input makes a search backtrack through a long run.
_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]++@(?:[A-Za-z0-9-]++\.)+[A-Za-z]{2,63}+(?![\w-])")
_JWT = re.compile(r"(?<![\w-])eyJ[\w-]*+\.[\w-]++\.[\w-]*+(?:\.[\w-]*+){0,2}+")
_BEARER = re.compile(
    r"(?i)(?<![\w-])(bearer\s+)(?!(?:realm|scope|error|error_description|error_uri)\s*=)"
    r"[A-Za-z0-9._~+/-]{8,}+=*+"  # tokens are long; "bearer tokens are..." is prose
)

# Candidates in one pass: a run of digits with single separators, or an IBAN-shaped
# word. What a candidate is (if anything) is decided in Python, and only for the rare
# run with enough digits to be personal data.
_CANDIDATES = re.compile(
    r"(?P<iban>(?<!\w)[A-Z]{2}\d\d(?: ?[A-Z0-9]{4})*+(?: ?[A-Z0-9]{1,3})?+(?!\w))"
    r"|(?P<run>(?<![\w.+-])[+(]?\d(?:[ ./-]?\(?\d|\) ?\d)*+(?!\w))",
    re.ASCII,  # digits are 0-9: Luhn and mod-97 work on those
)
# The pre-checks: each starts with a character class, which the regex engine scans for
# in C before trying the rest (a lookbehind in front would be tried at every position:
# the first digit is consumed, then the lookbehind looks at the character before it).
_EIGHT_DIGITS = re.compile(r"\d(?<![A-Za-z0-9]\d)(?:[ ()/-]{0,2}\d){7}", re.ASCII)
_IBAN_START = re.compile(r"[A-Z]{2}\d\d", re.ASCII)
_DOTTED_PHONE = re.compile(r"\d{3}\.\d{3}\.\d{4}", re.ASCII)
_NANP = re.compile(r"(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}", re.ASCII)
_SEPARATORS = re.compile(r"[^0-9A-Za-z]+")
_NOT_DIGITS = re.compile(r"\D", re.ASCII)
_CARD_PART = re.compile(r"\d(?:[ -]?\d)*+", re.ASCII)
_MIN_DIGITS = 8  # the shortest phone number counted (international, with country code)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits (card numbers end with its check digit)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card_network_prefix(digits: str) -> bool:
    first = digits[0]
    return first in "3456" or (first == "2" and 2221 <= int(digits[:4]) <= 2720)


def iban_valid(text: str) -> bool:
    """ISO 13616: 15-34 characters, the first four moved to the end, letters as 10-35,
    the number modulo 97 is 1."""
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isascii() or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _groups(text: str) -> list[str]:
    return [group for group in _SEPARATORS.split(text) if group]


def _longest_valid_prefix(groups: list[str], valid: Callable[[str], bool]) -> int:
    """How many leading groups form a valid number (0: none): a card or IBAN may be
    followed by more digits (an expiry date, a year), which the candidate includes."""
    for count in range(len(groups), 0, -1):
        if valid("".join(groups[:count])):
            return count
    return 0


def _masked_prefix(text: str, groups: list[str], count: int, placeholder: str) -> str:
    """``placeholder`` in place of the first ``count`` groups of ``text``, the rest kept."""
    if count == len(groups):
        return placeholder
    end = 0
    for group in groups[:count]:
        end = text.index(group, end) + len(group)
    return placeholder + text[end:]


def _is_card(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and _card_network_prefix(digits) and luhn_valid(digits)


def _classify_run(text: str) -> str:
    digits = _NOT_DIGITS.sub("", text)
    count = len(digits)
    if count < _MIN_DIGITS:
        return text
    if text[0] == "+":
        return PHONE_MASK if count <= 15 else text
    if text[0] in "23456":
        card = _CARD_PART.match(text)
        if card is not None:  # the card part ends at the first other separator (an expiry's /)
            groups = _groups(card.group())
            taken = _longest_valid_prefix(groups, _is_card)
            if taken:
                return _masked_prefix(text, groups, taken, CARD_MASK)
    if _NANP.fullmatch(text):
        return PHONE_MASK
    if text[0] == "0" and text[1] != "0" and 9 <= count <= 12 and _national_separators(text):
        return PHONE_MASK
    return text


def _national_separators(text: str) -> bool:
    """A national number uses one kind of separator (``030 1234 5678``, ``0151-2345678``);
    ``01-12-2026 10`` (a date and an hour) mixes them."""
    used = set(_SEPARATORS.findall(text))
    return used <= {" "} or used <= {"-"}


def _classify_iban(text: str) -> str:
    groups = _groups(text)
    taken = _longest_valid_prefix(groups, iban_valid)
    return _masked_prefix(text, groups, taken, IBAN_MASK) if taken else text


def _mask_candidate(match: re.Match[str]) -> str:
    text = match.group()
    return _classify_iban(text) if match.lastgroup == "iban" else _classify_run(text)


def _mask_bearer(match: re.Match[str]) -> str:
    return match.group(1) + TOKEN_MASK


def may_hold_personal_data(text: str) -> bool:
    """The cheap test in front of :func:`mask_personal_data`, run on every log line.

    Never False for a text that has something to mask: every shape needs an ``@``, a
    ``+``, ``eyJ`` or ``bearer``, an IBAN's start, a dotted ``415.555.2671``, or eight
    digits with at most two card or phone separators between them, the first not glued
    to a letter or digit. Hex ids, IPv4 addresses and paths pass without a match.
    """
    return (
        "@" in text
        or "+" in text
        or "eyJ" in text
        or "bearer" in text.lower()
        or _EIGHT_DIGITS.search(text) is not None
        or _IBAN_START.search(text) is not None
        or ("." in text and _DOTTED_PHONE.search(text) is not None)
    )


def mask_personal_data(text: str) -> str:
    """``text`` with every email, phone number, card number, IBAN, bearer token and
    JWT replaced by a placeholder naming what was there (``[email]``...)."""
    if "eyJ" in text:
        text = _JWT.sub(TOKEN_MASK, text)
    if "bearer" in text.lower():
        text = _BEARER.sub(_mask_bearer, text)
    if "@" in text:
        text = _EMAIL.sub(EMAIL_MASK, text)
    return _CANDIDATES.sub(_mask_candidate, text)
