"""What the doctor reads of a stage in infra/stages.toml. Read with tomllib, not infra.config: that
one imports the CDK (a Node process, seconds) for fields the doctor never reads, and synth already
refuses a stage it finds invalid."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from taskrouter.repository import ROOT

STAGES_FILE = ROOT / "infra" / "stages.toml"
SHOWN_STAGES_FILE = "infra/stages.toml"
# Domains and top-level domains reserved for examples (RFC 2606, RFC 6761): mail to them reaches no one.
_EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org")
_EXAMPLE_TLDS = ("example", "invalid", "test", "localhost")


class StageError(Exception):
    """The stage cannot be read; the message says which and how to fix it (one line)."""


@dataclass(frozen=True)
class Training:
    instance_type: str
    spot: bool


@dataclass(frozen=True)
class Capture:
    """The stage's `capture` table, as far as the doctor says what it sends (infra/config.py checks it)."""

    share: float  # of the turns the primary answered, sent to the teacher
    stores_records: bool  # `enabled`
    unseen_share: float  # drawn besides, where records are stored
    teacher_model: str


@dataclass(frozen=True)
class StageSettings:
    name: str
    region: str
    account: str | None  # None: deploys to whatever account the credentials are of
    alarm_emails: tuple[str, ...]
    training: Training | None
    capture: Capture | None = None  # None: no `capture` table (synth refuses it)

    @property
    def table(self) -> str:
        return f"[{self.name}] of {SHOWN_STAGES_FILE}"


def load_stage(name: str, path: Path | None = None) -> StageSettings:
    path = path or STAGES_FILE
    try:
        stages = tomllib.loads(path.read_text())
    except OSError as error:
        raise StageError(f"cannot read {path}: {error.strerror or error} (run the doctor from the repository)") from None
    except tomllib.TOMLDecodeError as error:
        raise StageError(f"{SHOWN_STAGES_FILE}: {error}") from None
    table = stages.get(name)
    if not isinstance(table, dict):
        known = ", ".join(sorted(key for key, value in stages.items() if isinstance(value, dict))) or "none"
        raise StageError(f"{SHOWN_STAGES_FILE} has no stage {name!r} (it has {known})")
    try:
        training = table.get("training")
        capture = table.get("capture")
        return StageSettings(
            name=name,
            region=str(table["region"]),
            account=str(table["account"]) if table.get("account") else None,
            alarm_emails=tuple(str(email) for email in table.get("alarm_emails", [])),
            training=Training(str(training["instance_type"]), bool(training.get("spot", True))) if training else None,
            capture=Capture(
                share=float(capture["share"]), stores_records=bool(capture["enabled"]),
                unseen_share=float(capture.get("unseen_share", 1.0)),
                teacher_model=str(capture.get("teacher_model") or table["openai_model"]),
            ) if capture else None,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise StageError(f"{SHOWN_STAGES_FILE} [{name}]: missing or malformed {error}") from None


def is_placeholder(email: str) -> bool:
    """An address at a domain reserved for examples, like the committed `...@example.com` ones."""
    domain = email.rpartition("@")[2].lower().rstrip(".")
    reserved_domain = any(domain == example or domain.endswith(f".{example}") for example in _EXAMPLE_DOMAINS)
    return reserved_domain or domain.rpartition(".")[2] in _EXAMPLE_TLDS
