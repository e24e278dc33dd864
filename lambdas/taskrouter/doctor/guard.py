"""A check that AWS did not answer becomes one line that says why, never a traceback."""

from __future__ import annotations

from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError

from taskrouter.doctor.aws import CallFailed, Denied, Throttled, Unanswered, error_code
from taskrouter.doctor.findings import Finding, unchecked

PERMISSIONS_FIX = "grant it to your AWS identity (docs/doctor.md lists every permission the doctor needs)"
THROTTLED_FIX = "run the doctor again in a minute"


def not_answered(check: str, error: CallFailed) -> Finding:
    if isinstance(error, Denied):
        return unchecked(check, f"needs permission {error.action}", PERMISSIONS_FIX)
    if isinstance(error, Throttled):
        return unchecked(check, f"AWS throttled {error.action} after botocore's retries", THROTTLED_FIX)
    if isinstance(error, Unanswered):  # a proxy's page, a wrong endpoint, no answer: named, with where it came from
        return unchecked(check, str(error), error.fix)
    return unchecked(check, str(error))


def guarded(check: str, run: Callable[[], Finding | list[Finding]]) -> list[Finding]:
    """A check's findings, or the one line that says why it could not be checked."""
    try:
        found = run()
    except CallFailed as error:
        return [not_answered(check, error)]
    except ClientError as error:
        return [unchecked(check, f"AWS answered {error_code(error)}: {error.response.get('Error', {}).get('Message', error)}")]
    except BotoCoreError as error:  # the network, or credentials that expired during the run
        return [unchecked(check, str(error))]
    return found if isinstance(found, list) else [found]
