"""Stage configuration: a bad value stops synth with a message naming the field."""

from __future__ import annotations

import json

import pytest

from infra.config import (
    STAGES_FILE,
    ConfigError,
    check_deployable,
    load_adapter_manifests,
    load_serving,
    load_stages,
)
from tests.adapters import make_adapter

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


REACT_BUDGET = "[dev.budgets.react]\nlatency_ms = 2000\nprimary_timeout_ms = 1600\nfallback_timeout_ms = 5000\n"


def test_timeouts_past_api_gateway_stop_synth(tmp_path):
    slow = "[dev.budgets.react]\nlatency_ms = 10000\nprimary_timeout_ms = 9000\nfallback_timeout_ms = 20000\n"
    with pytest.raises(ConfigError, match="slowest strategy's .* over API Gateway's 29 s"):
        load_stages(stages_with(tmp_path, REACT_BUDGET, slow))


def test_every_strategy_needs_a_budget(tmp_path):
    with pytest.raises(ConfigError, match=r"\[dev\].*missing \['react'\]"):
        load_stages(stages_with(tmp_path, REACT_BUDGET, ""))


def test_the_router_gets_every_strategys_timeouts_and_the_slowest_sizes_its_function():
    dev = load_stages()["dev"]
    env = dev.timeout_environment()
    assert env["TASKROUTER_PRIMARY_TIMEOUT_MS"] == "250" and env["TASKROUTER_FALLBACK_TIMEOUT_MS"] == "3000"
    assert env["TASKROUTER_PRIMARY_TIMEOUT_MS_FEW_SHOT_COT"] == "1000"
    assert env["TASKROUTER_PRIMARY_TIMEOUT_MS_REACT"] == "1600" and env["TASKROUTER_FALLBACK_TIMEOUT_MS_REACT"] == "5000"
    assert dev.router_timeout_s == 10  # registry read 2 s, react's 1.6 s primary and 5 s fallback, 1 s margin, rounded up


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"OPTION_ROLLING_BATCH": "vllm"}, "OPTION_ROLLING_BATCH must stay unset"),
        ({"OPTION_ROLLING_BATCH": "disable"}, "OPTION_ROLLING_BATCH must stay unset"),
        ({"OPTION_ENABLE_PREFIX_CACHING": "false"}, "OPTION_ENABLE_PREFIX_CACHING must be"),
    ],
)
def test_serving_keeps_lmi_in_vllm_async_mode_with_prefix_caching(tmp_path, change, message):
    import json

    from infra.config import SERVING_FILE

    serving = json.loads(SERVING_FILE.read_text())
    serving["options"].update(change)
    path = tmp_path / "serving.json"
    path.write_text(json.dumps(serving))
    with pytest.raises(ConfigError, match=message):
        load_serving(path)


def test_kms_volume_key_only_for_ebs_only_families():
    dev = load_stages()["dev"]
    assert not dev.volume_kms_supported  # ml.g5: local NVMe, hardware-encrypted
    assert dev.model_copy(update={"gpu_instance_type": "ml.p3.2xlarge"}).volume_kms_supported


def test_the_committed_stages_serve_the_base_alone():
    for stage in load_stages().values():
        assert stage.adapters == [] and stage.router_adapter is None
        assert stage.router_component_name == stage.base_component_name
        check_deployable(stage, load_adapter_manifests(stage), load_serving())


def test_deployability_needs_names_sagemaker_takes_adapters_of_the_base_and_the_router_among_them(tmp_path):
    stage = load_stages()["dev"]
    serving = load_serving()
    paths = [str(make_adapter(tmp_path, name, stage)) for name in ("router-a", "router-b")]
    configured = stage.model_copy(update={"adapters": paths, "router_adapter": "router-b"})
    manifests = load_adapter_manifests(configured)
    check_deployable(configured, manifests, serving)
    assert configured.router_component_name == "taskrouter-dev-router-b"

    long_name = manifests[0].model_copy(update={"name": "a" * 40 + "-router-with-a-name-too-long"})
    big_rank = manifests[0].model_copy(update={"adapter": manifests[0].adapter.model_copy(update={"rank": 128})})
    other_base = manifests[0].model_copy(update={"base_model": manifests[0].base_model.model_copy(update={"id": "Qwen/Qwen2.5-7B-Instruct"})})
    missing = manifests[0].model_copy(update={"adapter": manifests[0].adapter.model_copy(update={"archive_file": str(tmp_path / "gone.tar.gz")})})
    for manifests_, problem in (
        ([long_name], "over 63 characters"),
        ([big_rank], "adapter.rank 128 is over serving.json's max_lora_rank 64"),
        ([other_base], "not the stage's base"),
        ([missing], "gone.tar.gz is missing"),
        ([manifests[0], manifests[0]], "adapter names repeat"),
        ([manifests[0]], "router_adapter 'router-b' is not one of the stage's adapters"),
        ([manifests[0]] * 5, "over serving.json's OPTION_MAX_LORAS 4"),
    ):
        with pytest.raises(ConfigError, match=problem):
            check_deployable(configured, manifests_, serving)


def test_an_adapter_archive_is_one_tar_gz(tmp_path):
    stage = load_stages()["dev"]
    path = make_adapter(tmp_path, "router-a", stage)
    manifest = json.loads(path.read_text())
    manifest["adapter"]["archive_s3_uri"] = "s3://a-bucket/adapters/a.tar.gz"  # both: which one?
    path.write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="exactly one of archive_file and archive_s3_uri"):
        load_adapter_manifests(stage.model_copy(update={"adapters": [str(path)]}))
    del manifest["adapter"]["archive_file"]
    manifest["adapter"]["archive_s3_uri"] = "s3://a-bucket/adapters/a.zip"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="archive_s3_uri"):
        load_adapter_manifests(stage.model_copy(update={"adapters": [str(path)]}))
