"""Redaction of a captured turn's text before it leaves the router (docs/capture.md, "Redaction").

Pure: a function of the text and the kinds asked.

Each kind is looked for in a *matching view* of the text, where what people type in and around numbers
and addresses reads as one thing: invisible characters (zero-width spaces and joiners, word joiners,
byte-order marks, soft hyphens, bidirectional marks, combining marks) are dropped; every space
(no-break, narrow no-break, thin, ideographic) reads as " ", every dash (hyphens, en and em dashes,
minus) as "-", every decimal digit as its ASCII digit, other characters as NFKC folds them (full-width
forms), and the percent-escapes of a URL that spell a number or an address (`%20`, `%2B`, `%40`, ...)
as what they stand for. Each character of the view knows the characters of the text it came from, so
a match replaces exactly those: the text around it is never changed, moved or normalised.

The patterns read each character a bounded number of times (a local part starts only where none is
running, a number is read once from its first digit, and their groups are atomic or unambiguous), so
hostile text costs time linear in its length: `benchmarks/redaction.py` measures it (a 4,000-character
record in about a millisecond, hostile text of 50 times that in well under a second).

No phone-number library. Measured for the router Lambda (CPython 3.13, its bundle 9.74 MB zipped,
its cold start ~0.77 s): `phonenumberslite` 9.0.42 adds 0.73 MB zipped (bytecode only; `phonenumbers`
9.0.43, with its geocoding and carrier data, 5.4 MB) and 12-26 ms to a cold import (25-45 ms alone),
which a lazy import would move onto the first sampled turn instead; its PhoneNumberMatcher needs a
region for every national number (a record has no country), and over the 12 regions of the tests it
took ~95 ms for one 4,000-character record on this project's 2-core machine (~8 ms a region), on the
request path of every sampled turn, against a 300 ms budget. It also found numbers grouped by narrow
no-break spaces only as two-digit pieces, and took `2024-05-01` and `2.13.0` for phone numbers. The
patterns below are the guarantee: they redact every format of tests/unit/test_redaction.py's corpus,
and a format found missing is added there."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from itertools import chain, compress, repeat

REDACTION_KINDS = ("email", "phone")
DEFAULT_REDACTION = REDACTION_KINDS

_Spans = Iterator[tuple[int, int]]  # [start, end) of what a kind finds in a view

# -- the matching view -----------------------------------------------------------------------------
_INVISIBLE = frozenset({"Cf", "Mn", "Mc", "Me"})  # format characters and combining marks
_DOTS = frozenset("\u00b7\u2022\u2219\u22c5\u30fb")  # middle dots some write between digit groups
_QUOTES = frozenset("\u201c\u201d\u201e\u201f\u2033")  # typographic double quotes around a local part
_MAX_CACHED_FOLDS = 8192  # distinct characters: hostile text must not grow the cache without bound


def _fold(character: str) -> str:
    """How the patterns read one character ("" for one they skip)."""
    category = unicodedata.category(character)
    if category in _INVISIBLE:
        return ""
    if category == "Nd":
        return str(unicodedata.decimal(character))
    if category == "Zs" or character == "\t":
        return " "
    if category == "Pd" or character == "\u2212":
        return "-"
    if character in _DOTS:
        return "."
    if character in _QUOTES:
        return '"'
    return unicodedata.normalize("NFKC", character)


# Characters whose fold is not one character: where they are, a view's positions stop being the text's.
# Bounded by Unicode itself (its combining marks, format characters and compatibility expansions).
_SKIPPED: set[str] = set()
_EXPANDED: set[str] = set()


class _Folds(dict[int, str]):
    """`str.translate`'s table of folds, filled as characters are met (translating costs C time)."""

    def __missing__(self, code: int) -> str:
        folded = _fold(chr(code))
        if len(folded) != 1:
            (_SKIPPED if not folded else _EXPANDED).add(chr(code))
        if len(self) < _MAX_CACHED_FOLDS:
            self[code] = folded
        return folded


class _Lengths(dict[int, str]):
    """`str.translate`'s table of each character's fold length, as a character (a fold is under 256)."""

    def __missing__(self, code: int) -> str:
        length = chr(len(_FOLDS[code]))
        if len(self) < _MAX_CACHED_FOLDS:
            self[code] = length
        return length


_FOLDS, _LENGTHS = _Folds(), _Lengths()


@dataclass(frozen=True)
class _Kind:
    """A kind of personal data: its placeholder, how it is found in a view, and the percent-escapes of
    a URL that the view reads as what they stand for (upper-case hex; lower-case is matched too)."""

    placeholder: str
    find: Callable[[str], _Spans]
    escapes: Mapping[str, str]

    @cached_property
    def escape(self) -> re.Pattern[str]:
        return re.compile("|".join("".join(f"[{c}{c.lower()}]" if c.isalpha() else c for c in e) for e in self.escapes))


class _View:
    """`text` as the patterns read it, and for each of its characters where in `original` it came from."""

    def __init__(self, original: str, kind: _Kind) -> None:
        self.original = original
        self._starts: list[int] | None = None  # None: each character of the view is the text's at its place
        self._ends: list[int] = []
        self.text = original.translate(_FOLDS)
        if _SKIPPED.isdisjoint(original) and _EXPANDED.isdisjoint(original) and not kind.escape.search(original):
            return  # one character for one: the common case
        pieces: list[str] = []
        self._starts = []
        position = 0
        for escape in kind.escape.finditer(original):  # few in a text: the rest is folded at C speed
            pieces.append(self._folded(position, escape.start()))
            pieces.append(kind.escapes[escape.group().upper()])
            self._starts.append(escape.start())
            self._ends.append(escape.end())
            position = escape.end()
        pieces.append(self._folded(position, len(original)))
        self.text = "".join(pieces)

    def _folded(self, begin: int, end: int) -> str:
        """The view of the text's [begin, end), each of its characters noted as many times as its fold
        has characters (none for a skipped one)."""
        stretch = self.original[begin:end]
        lengths = stretch.translate(_LENGTHS).encode("latin-1")
        if _EXPANDED.isdisjoint(stretch):  # lengths of 0 and 1 only: zero-width characters, combining marks
            kept = list(compress(range(begin, end), lengths))
            self._starts.extend(kept)
            self._ends.extend(map((1).__add__, kept))
        else:
            self._starts.extend(chain.from_iterable(map(repeat, range(begin, end), lengths)))
            self._ends.extend(chain.from_iterable(map(repeat, range(begin + 1, end + 1), lengths)))
        return stretch.translate(_FOLDS)

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The text's span that the view's non-empty span [start, end) came from, with the characters
        the view skipped right after it (a zero-width character, a keycap's marks): they go with it."""
        if self._starts is None:
            return start, end
        following = self._starts[end] if end < len(self._starts) else len(self.original)
        return self._starts[start], max(self._ends[end - 1], following)


def _substitute(text: str, kind: _Kind) -> str:
    """`text` with what `kind` finds in its view replaced by its placeholder."""
    view = _View(text, kind)
    kept: list[str] = []
    position = 0
    for start, end in kind.find(view.text):
        begin, stop = view.original_span(start, end)
        begin = max(begin, position)  # two matches within one character that folds to several
        kept += [text[position:begin], kind.placeholder]
        position = stop
    kept.append(text[position:])
    return "".join(kept)


# -- e-mail addresses ------------------------------------------------------------------------------
# A local part: quoted ("dana smith"@), or the characters RFC 5322 allows unquoted (letters of any
# script, digits and !#$%&'*+/=?^`{|}~-) in dot-separated runs, starting where no such run is going
# on. A domain: labels of letters (any script: IDN), digits and hyphens, the last one holding a letter;
# or an IP address.
_ATEXT = r"\w!#$%&'*+/=?^`{|}~\-"
_EMAIL = re.compile(
    r'(?:"(?:[^"\\\n]|\\.){1,64}"'
    rf"|(?<![{_ATEXT}.])(?P<local>(?>[{_ATEXT}]+(?:\.[{_ATEXT}]+)*)))"
    r"@(?P<domain>(?:[\w-]+\.)+[\w-]*[^\W\d_][\w-]*|[0-9]{1,3}(?:\.[0-9]{1,3}){3}|\[[0-9A-Fa-f:.]{2,45}\])"
)
# Scripts written without spaces: a Latin address in Chinese or Japanese text touches its words.
_UNSPACED = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_QUERY_VALUE = re.compile(r"[?&][\w.-]*=")  # `?email=` before an address in a URL
_LETTER = re.compile(r"[^\W\d_]")
_OPENING_QUOTES = "'`"


def _address_start(local: str) -> int:
    """Where, in a local part's match, the address begins: the whole of it, but for what a URL or the
    text around the address ran into it (a query's `?key=`, a path's `/`, quotes, unspaced words)."""
    start = 0
    if (query := [found.end() for found in _QUERY_VALUE.finditer(local)]) and query[-1] < len(local):
        start = query[-1]
    elif local.startswith("//") and local.rfind("/") + 1 < len(local):  # a URL's authority and path
        start = local.rfind("/") + 1
    last_unspaced = None
    for found in _UNSPACED.finditer(local, start):
        last_unspaced = found.end()
    if last_unspaced is not None and last_unspaced < len(local) and local[last_unspaced:].isascii():
        # "请发邮件到dana": the address is "dana"
        start = last_unspaced
    while start < len(local) - 1 and local[start] in _OPENING_QUOTES:
        start += 1
    return start


def _domain_end(domain: str) -> int:
    """Where a domain's match ends: before the unspaced words that follow its last label."""
    last_label = domain.rfind(".") + 1
    tail = _UNSPACED.search(domain, last_label)
    if tail is None or not _LETTER.search(domain, last_label, tail.start()):
        return len(domain)
    return tail.start()


def _emails(view: str) -> _Spans:
    for found in _EMAIL.finditer(view):
        start = found.start()
        if found.group("local") is not None:
            start += _address_start(found.group("local"))
        yield start, found.start("domain") + _domain_end(found.group("domain"))


# -- phone numbers ---------------------------------------------------------------------------------
# A number as phone numbers are written: an optional "+" or "(" (or both), then digits, each group after
# at most four separators (spaces, dashes, dots, slashes, brackets, "+"); a separator followed by a
# time (10:30, 14h, 9 am) ends it. Each digit is read once: separators and digits are disjoint.
_SEPARATORS = r"[ \-./()+]"
_TIME_AHEAD = r"[0-9]{1,2}(?::[0-9]|[hH]|\s?[aApP]\.?[mM]\b)"
_NUMBER = re.compile(rf"[+(]{{0,3}}[0-9](?:(?:{_SEPARATORS}{{1,4}}(?!{_TIME_AHEAD}))?[0-9])*+")
_EXTENSION = re.compile(
    r" {0,3}[,;]? {0,3}(?:extension|ext|extn|x|poste|durchwahl|dw|nebenstelle|interno|int|ramal|toestel|tst|内線|#)"
    r"\.? {0,3}[:#]? {0,3}[0-9]{1,6}(?![0-9])",
    re.IGNORECASE,
)
_MIN_PHONE_DIGITS = 7  # a local number without its area code

# Numbers of that shape that are no phone, kept when one is the whole number: dates (year first, day
# first, month first), years, dotted times, and two of those: a range (joined by a dash or a slash), or a
# date and its time.
_YEAR = r"(?:19|20)[0-9]{2}"
_DAY_OR_MONTH = r"(?:0?[1-9]|[12][0-9]|3[01])"
_DATE = "|".join(
    rf"{_YEAR}{s}(?:0?[1-9]|1[0-2]){s}{_DAY_OR_MONTH}|{_DAY_OR_MONTH}{s}{_DAY_OR_MONTH}{s}{_YEAR}"
    for s in ("-", r"\.", "/")
)
_WHEN = rf"(?:{_DATE}|{_YEAR}|(?:[01]?[0-9]|2[0-3])\.[0-5][0-9])"
_NOT_A_PHONE = re.compile(rf"{_WHEN}(?: ?[-/] ?| ){_WHEN}|{_WHEN}")
# Amounts: digits in groups of three (or none), with cents, next to a currency.
_AMOUNT = re.compile(r"(?:[0-9]{1,3}(?:([ .])[0-9]{3})(?:\1[0-9]{3})*|[0-9]+)(?:\.[0-9]{1,2})?")
_CURRENCY_SIGN = r"[$€£¥₹₩₽¢]"
_CURRENCY_CODE = r"(?:EUR|USD|GBP|CHF|JPY|INR|BRL|CAD|AUD)"  # upper case, whole words: not "Europe", "audio"
_CURRENCY_BEFORE = re.compile(rf"(?:{_CURRENCY_SIGN}|(?<![A-Za-z])(?:{_CURRENCY_CODE}|Rs\.|Fr\.)) ?\Z")
_CURRENCY_WORD = r"(?i:euros?|dollars?|pounds?|francs?|yen|rupees?|reais)\b"
_CURRENCY_AFTER = re.compile(rf"(?:,[0-9]{{1,2}})? ?(?:{_CURRENCY_SIGN}|{_CURRENCY_CODE}\b|{_CURRENCY_WORD})")


def _is_phone(view: str, start: int, end: int) -> bool:
    number = view[start:end]
    if end - start < _MIN_PHONE_DIGITS or sum(map(str.isdigit, number)) < _MIN_PHONE_DIGITS:
        return False
    if not number.startswith("+") and _NOT_A_PHONE.fullmatch(number.lstrip("(")):
        return False
    next_to_currency = _CURRENCY_BEFORE.search(view, max(start - 5, 0), start) or _CURRENCY_AFTER.match(view, end)
    return not (next_to_currency and _AMOUNT.fullmatch(number))


def _phones(view: str) -> _Spans:
    """Phone numbers with their extensions. Longer numbers (a card number, an IBAN's digits, a phone
    beside a date) go too: a number redacted for nothing costs less than one kept."""
    position = 0
    while found := _NUMBER.search(view, position):
        start, end = found.span()
        position = end
        if not _is_phone(view, start, end):
            continue
        if extension := _EXTENSION.match(view, end):
            end = position = extension.end()
        number = found.group()
        while number.startswith("(") and number.count("(") > number.count(")"):
            number, start = number[1:], start + 1  # "call (0612345678)": the brackets stay balanced
        yield start, end


_KINDS = {
    # `mailto:dana%40acme.com`; other escapes are characters of a local part ("%" is one)
    "email": _Kind("[email]", _emails, {"%40": "@"}),
    # a number's: `tel:%2B33%206%2012...`
    "phone": _Kind(
        "[phone]", _phones, {"%20": " ", "%28": "(", "%29": ")", "%2B": "+", "%2D": "-", "%2E": ".", "%2F": "/"}
    ),
}


def redact(text: str, kinds: Collection[str]) -> str:
    """`text` with every e-mail address and phone number replaced by a placeholder, for the kinds
    asked. Names, postal addresses and other personal data are not recognised (docs/capture.md).
    Addresses go first: a phone pass never sees the digits of an address."""
    for kind in REDACTION_KINDS:
        if kind in kinds:
            text = _substitute(text, _KINDS[kind])
    return text
