"""Stage configuration: a bad value stops synth with a message naming the field."""

from __future__ import annotations

import pytest

from infra.config import STAGES_FILE, ConfigError, load_stages

VALID = STAGES_FILE.read_text()


def stages_with(tmp_path, old, new):
    assert old in VALID
    path = tmp_path / "stages.toml"
    path.write_text(VALID.replace(old, new, 1))
    return path


def test_the_repository_stages_are_valid():
    stages = load_stages()
    assert set(stages) == {"dev", "prod"}
    assert stages["prod"].retain_on_delete and not stages["dev"].retain_on_delete


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('region = "us-east-1"', 'region = "mars-1"', "region"),
        ("gpu_instance_count = 1", "gpu_instance_count = 0", "gpu_instance_count"),
        ('gpu_instance_type = "ml.g5.2xlarge"', 'gpu_instance_type = "g5.2xlarge"', "gpu_instance_type"),
        ("log_retention_days = 14", "log_retention_days = 15", "log_retention_days"),
        ('alarm_emails = ["taskrouter-dev-alarms@example.com"]', 'alarm_emails = ["nobody"]', "alarm_emails"),
        ("primary_timeout_ms = 250", "primary_timeout_ms = 400", "primary_timeout_ms"),
        ('default_strategy = "zero_shot"', 'default_strategy = "guess"', "default_strategy"),
        ("retain_on_delete = false", "retain_on_delete = false\ncolour = 3", "colour"),
        ('# account = "123456789012"', 'account = "12345"', "account"),
    ],
)
def test_an_invalid_value_names_its_field(tmp_path, old, new, field):
    with pytest.raises(ConfigError, match=rf"\[dev\].*{field}"):
        load_stages(stages_with(tmp_path, old, new))


def test_a_missing_field_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"\[dev\]: openai_model: Field required"):
        load_stages(stages_with(tmp_path, 'openai_model = "gpt-4.1-mini"\n', ""))
