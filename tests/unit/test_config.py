"""Stage configuration: a bad value stops synth with a message naming the field."""

from __future__ import annotations

import pytest

from infra.config import (
    STAGES_FILE,
    ConfigError,
    check_deployable,
    load_adapter_manifest,
    load_serving,
    load_stages,
)

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
        ('alarm_emails = ["taskrouter-dev-alarms@example.com"]', 'alarm_emails = ["a@example.com\\n"]', "alarm_emails"),
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


def test_an_instance_family_of_unknown_storage_stops_synth(tmp_path):
    with pytest.raises(ConfigError, match=r"gpu_instance_type: .*'g7x' is not known"):
        load_stages(stages_with(tmp_path, 'gpu_instance_type = "ml.g5.2xlarge"', 'gpu_instance_type = "ml.g7x.2xlarge"'))


def test_timeouts_past_api_gateway_stop_synth(tmp_path):
    path = stages_with(tmp_path, "latency_budget_ms = 300", "latency_budget_ms = 10000")
    path.write_text(
        path.read_text()
        .replace("primary_timeout_ms = 250", "primary_timeout_ms = 9000", 1)
        .replace("fallback_timeout_ms = 3000", "fallback_timeout_ms = 20000", 1)
    )
    with pytest.raises(ConfigError, match="over API Gateway's 29 s"):
        load_stages(path)


def test_kms_volume_key_only_for_ebs_only_families():
    dev = load_stages()["dev"]
    assert not dev.volume_kms_supported  # ml.g5: local NVMe, hardware-encrypted
    assert dev.model_copy(update={"gpu_instance_type": "ml.p3.2xlarge"}).volume_kms_supported


def test_deployability_needs_names_sagemaker_takes_and_a_rank_the_container_loads():
    stage = load_stages()["dev"]
    serving = load_serving()
    manifest = load_adapter_manifest(stage)
    check_deployable(stage, manifest, serving)
    long_name = manifest.model_copy(update={"name": "a" * 40 + "-router-with-a-name-too-long"})
    with pytest.raises(ConfigError, match="over 63 characters"):
        check_deployable(stage, long_name, serving)
    big_rank = manifest.model_copy(update={"adapter": manifest.adapter.model_copy(update={"rank": 128})})
    with pytest.raises(ConfigError, match="adapter.rank 128 is over serving.json's max_lora_rank 64"):
        check_deployable(stage, big_rank, serving)
