"""The router's settings from the environment: defaults, bounds and clear errors."""

import pytest

from taskrouter.adapters.settings import RuntimeSettings, SettingsError
from taskrouter.core.request import Strategy

BASE = {"TASKROUTER_TABLE_NAME": "tasks"}


def test_defaults():
    settings = RuntimeSettings.from_env(BASE)
    assert (settings.router.primary_timeout_s, settings.router.fallback_timeout_s) == (0.25, 3.0)
    assert settings.router.hedge_after_s == 0.15 and settings.router.default_strategy is Strategy.ZERO_SHOT
    assert settings.sagemaker_endpoint is None and not settings.openai_configured
    assert settings.ops_mode_parameter is None


def test_each_strategy_has_its_own_budget():
    env = {
        **BASE, "TASKROUTER_PRIMARY_TIMEOUT_MS": "200", "TASKROUTER_HEDGE_AFTER_MS": "100",
        "TASKROUTER_PRIMARY_TIMEOUT_MS_FEW_SHOT_COT": "1800", "TASKROUTER_FALLBACK_TIMEOUT_MS_FEW_SHOT_COT": "6000",
        "TASKROUTER_PRIMARY_TIMEOUT_MS_REACT": "2600",
    }  # fmt: skip
    router = RuntimeSettings.from_env(env).router
    zero_shot, cot, react = (router.budget(strategy) for strategy in Strategy)
    assert (zero_shot.primary_timeout_s, zero_shot.fallback_timeout_s, zero_shot.hedge_after_s) == (0.2, 3.0, 0.1)
    assert (cot.primary_timeout_s, cot.fallback_timeout_s, cot.hedge_after_s) == (1.8, 6.0, None)  # no hedge
    assert (react.primary_timeout_s, react.fallback_timeout_s) == (2.6, 5.0)  # the default fallback budget
    defaults = RuntimeSettings.from_env(BASE).router
    assert defaults.budget(Strategy.FEW_SHOT_COT).primary_timeout_s == 1.0
    assert defaults.budget(Strategy.REACT).primary_timeout_s == 1.6


def test_hedging_off_or_not_under_the_primary_timeout_means_none():
    assert RuntimeSettings.from_env({**BASE, "TASKROUTER_HEDGE_AFTER_MS": "off"}).router.hedge_after_s is None
    late = {**BASE, "TASKROUTER_HEDGE_AFTER_MS": "300", "TASKROUTER_PRIMARY_TIMEOUT_MS": "250"}
    assert RuntimeSettings.from_env(late).router.hedge_after_s is None


def test_openai_is_configured_by_secret_or_local_key():
    assert RuntimeSettings.from_env({**BASE, "TASKROUTER_OPENAI_SECRET_ARN": "arn:x"}).openai_configured
    assert RuntimeSettings.from_env({**BASE, "OPENAI_API_KEY": "sk-local"}).openai_configured


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "TASKROUTER_TABLE_NAME is not set"),
        ({**BASE, "TASKROUTER_PRIMARY_TIMEOUT_MS": "fast"}, "TASKROUTER_PRIMARY_TIMEOUT_MS must be a number"),
        ({**BASE, "TASKROUTER_PRIMARY_TIMEOUT_MS": "0"}, "between 10 and 10000"),
        ({**BASE, "TASKROUTER_FALLBACK_TIMEOUT_MS": "60000"}, "between 100 and 20000"),
        ({**BASE, "TASKROUTER_PRIMARY_TIMEOUT_MS_REACT": "slow"}, "TASKROUTER_PRIMARY_TIMEOUT_MS_REACT must be a number"),
        ({**BASE, "TASKROUTER_FALLBACK_TIMEOUT_MS_FEW_SHOT_COT": "50"}, "between 100 and 20000"),
        ({**BASE, "TASKROUTER_DEFAULT_STRATEGY": "guess"}, "TASKROUTER_DEFAULT_STRATEGY must be one of"),
        ({**BASE, "TASKROUTER_REGISTRY_TTL_S": "60"}, "between 0 and 25"),
    ],
)
def test_bad_values_are_named(env, message):
    with pytest.raises(SettingsError, match=message):
        RuntimeSettings.from_env(env)
