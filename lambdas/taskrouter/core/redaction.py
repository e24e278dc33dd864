"""Redaction of a captured turn's text before it leaves the router (docs/capture.md, "Redaction").

Pure: a function of the text and the kinds asked."""

from __future__ import annotations

import re
from collections.abc import Collection

REDACTION_KINDS = ("email", "phone")
DEFAULT_REDACTION = REDACTION_KINDS

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# A number written as phone numbers are: an optional "+", then digits or a bracketed group (an area
# code), each after at most one separator (space, no-break space, "-", ".", "/"); at least 7 units.
_PHONE = re.compile(r"(?<![\w@+.\-/])\+?(?:\(\d{1,4}\)|\d)(?:[ \u00a0.\-/]?(?:\(\d{1,4}\)|\d)){6,}(?![\w@])")
# Numbers of that shape that are no phone, kept when one is the whole match: dates and year ranges.
_NOT_A_PHONE = re.compile(r"\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2\d{2,4}|\d{4} ?[-/] ?\d{4}")
_MIN_PHONE_DIGITS = 7  # a local number without its area code
_PLACEHOLDERS = {"email": "[email]", "phone": "[phone]"}


def _phone(match: re.Match[str]) -> str:
    """A phone's placeholder. Longer runs of digits (a phone beside a date, a card number) go too:
    a number redacted for nothing costs less than one kept."""
    number = match.group(0)
    if sum(character.isdigit() for character in number) < _MIN_PHONE_DIGITS or _NOT_A_PHONE.fullmatch(number):
        return number
    return _PLACEHOLDERS["phone"]


def redact(text: str, kinds: Collection[str]) -> str:
    """`text` with every e-mail address and phone number replaced by a placeholder, for the kinds
    asked. Names, postal addresses and other personal data are not recognised (docs/capture.md)."""
    if "email" in kinds:
        text = _EMAIL.sub(_PLACEHOLDERS["email"], text)
    if "phone" in kinds:
        text = _PHONE.sub(_phone, text)
    return text
