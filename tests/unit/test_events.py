import pytest

from taskrouter.core.events import derive_event


@pytest.mark.parametrize(
    ("current", "decided", "event"),
    [
        (None, "follow_up_email", "start"),
        ("follow_up_email", "follow_up_email", "continue"),
        ("follow_up_email", "prepare_linkedin_post", "switch"),
        ("follow_up_email", None, "end"),
        (None, None, "none"),
    ],
)
def test_contract_event_table(current, decided, event):
    assert derive_event(current, decided) == event
