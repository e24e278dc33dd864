"""The contract's task-name rule, checked as a full match wherever a name is checked."""

import pytest

from taskrouter.core.tasks import check_task_name


@pytest.mark.parametrize("name", ["abc", "follow_up_email", "a" + "b" * 63, "a12", "x_y"])
def test_valid_names(name):
    assert check_task_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["abc\n", "abc\r\n", "\nabc", "ab", "a" * 65, "Abc", "1abc", "abc-d", "abc ", " abc", "ab\nc", "none", ""],
)
def test_invalid_names_including_a_trailing_newline(name):
    with pytest.raises(ValueError):
        check_task_name(name)
