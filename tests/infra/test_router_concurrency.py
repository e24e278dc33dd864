"""The router's concurrency and both functions' deploys (issue 11, points 4 and 5): API Gateway invokes
each function through its alias `live` on a published version; the router's concurrency is reserved in
every stage and provisioned on its alias, scaled on utilization, where the stage says so (prod); a new
version reaches each alias through a CodeDeploy canary that rolls back on the Api stack's deploy alarms
where the stage says so (prod). The stage configuration that sizes it refuses bad combinations."""

from __future__ import annotations

import json
import re
import typing

import pytest
from aws_cdk import aws_codedeploy as codedeploy

from infra.api import LIVE_ALIAS, METRICS_NAMESPACE, ROUTER_SERVICE
from infra.config import STAGES_FILE, CanaryName, ConfigError, RouterConcurrency, load_stages

FUNCTIONS = {"Router": "taskrouter.handlers.router.handler", "Registry": "taskrouter.handlers.registry.handler"}
RUNBOOK_SLUG = re.compile(r" Runbook: docs/runbook\.md#[a-z0-9]+(-[a-z0-9]+)*$")


def _resources(template: dict, resource_type: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == resource_type}


def _functions(template: dict) -> dict[str, str]:
    """"Router" / "Registry" -> the function's logical id."""
    by_handler = {f["Properties"]["Handler"]: k for k, f in _resources(template, "AWS::Lambda::Function").items()}
    return {name: by_handler[handler] for name, handler in FUNCTIONS.items()}


def _aliases(template: dict) -> dict[str, str]:
    """"Router" / "Registry" -> the logical id of the function's alias."""
    functions = {logical: name for name, logical in _functions(template).items()}
    aliases = {}
    for logical, alias in _resources(template, "AWS::Lambda::Alias").items():
        name = functions[alias["Properties"]["FunctionName"]["Ref"]]
        assert name not in aliases, f"{name} has more than one alias"
        aliases[name] = logical
    return aliases


def _render(template: dict, value) -> str:
    """A template value as text: a Ref to an alias as the ARN it resolves to (`...:function:${Fn}:live`),
    any other Ref or GetAtt as ${...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_render(template, part) for part in value)
    if "Ref" in value:
        resource = template["Resources"].get(value["Ref"], {})
        if resource.get("Type") == "AWS::Lambda::Alias":
            props = resource["Properties"]
            return "arn:aws:lambda:${AWS::Region}:${AWS::AccountId}:function:${%s}:%s" % (
                props["FunctionName"]["Ref"], props["Name"])
        return "${%s}" % value["Ref"]
    if "Fn::GetAtt" in value:
        return "${%s.%s}" % tuple(value["Fn::GetAtt"])
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_render(template, part) for part in parts)
    return json.dumps(value)


# --- aliases and versions --------------------------------------------------------------------


def test_each_function_serves_through_its_live_alias_on_a_published_version(stage):
    template = stage.templates["Api"]
    functions = _functions(template)
    aliases = _aliases(template)
    assert set(aliases) == set(FUNCTIONS)
    versions = _resources(template, "AWS::Lambda::Version")
    assert len(versions) == 2
    for name, logical in aliases.items():
        props = template["Resources"][logical]["Properties"]
        assert props["Name"] == LIVE_ALIAS == "live"
        version_id, attribute = props["FunctionVersion"]["Fn::GetAtt"]
        assert attribute == "Version"
        # the function's current_version: a new one is published whenever its code or configuration changes
        assert versions[version_id]["Properties"]["FunctionName"] == {"Ref": functions[name]}
        assert version_id.startswith(f"{name}CurrentVersion")


def test_the_router_concurrency_is_reserved_in_every_stage(stage):
    template = stage.templates["Api"]
    functions = _functions(template)
    concurrency = stage.config.router_concurrency
    router = template["Resources"][functions["Router"]]["Properties"]
    assert router["ReservedConcurrentExecutions"] == concurrency.reserved
    assert concurrency.provisioned_max <= concurrency.reserved  # provisioned is taken from the reserved
    # under the worst case (every request for the router's whole timeout at the API's rate), which it bounds
    assert concurrency.reserved < stage.config.api_rate_limit_rps * stage.config.router_timeout_s


def test_provisioned_concurrency_scales_on_utilization_where_the_stage_asks_for_it(stage):
    template = stage.templates["Api"]
    concurrency = stage.config.router_concurrency
    assert concurrency.provisioned == (stage.config.name == "prod")  # dev may cold start, prod may not
    aliases = _aliases(template)
    router_alias = template["Resources"][aliases["Router"]]["Properties"]
    registry_alias = template["Resources"][aliases["Registry"]]["Properties"]
    assert "ProvisionedConcurrencyConfig" not in registry_alias
    targets = _resources(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    policies = _resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    if not concurrency.provisioned:
        assert "ProvisionedConcurrencyConfig" not in router_alias
        assert targets == {} and policies == {}
        return
    assert router_alias["ProvisionedConcurrencyConfig"] == {"ProvisionedConcurrentExecutions": concurrency.provisioned_min}
    ((target_id, target),) = targets.items()
    props = target["Properties"]
    assert (props["ServiceNamespace"], props["ScalableDimension"]) == ("lambda", "lambda:function:ProvisionedConcurrency")
    assert (props["MinCapacity"], props["MaxCapacity"]) == (concurrency.provisioned_min, concurrency.provisioned_max)
    resource_id = json.dumps(props["ResourceId"])
    assert aliases["Router"] in resource_id and resource_id.endswith(':live"]]}')
    assert "AWSServiceRoleForApplicationAutoScaling_LambdaConcurrency" in json.dumps(props["RoleARN"])
    ((policy,),) = [list(policies.values())]
    policy = policy["Properties"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["ScalingTargetId"] == {"Ref": target_id}
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"] == {"PredefinedMetricType": "LambdaProvisionedConcurrencyUtilization"}
    assert tracking["TargetValue"] == concurrency.utilization_target


# --- API Gateway -----------------------------------------------------------------------------


def test_the_api_invokes_the_aliases_and_only_they_may_be_invoked(stage):
    template = stage.templates["Api"]
    functions = _functions(template)
    paths = {k: r["Properties"]["PathPart"] for k, r in _resources(template, "AWS::ApiGateway::Resource").items()}
    integrations = {}
    for method in _resources(template, "AWS::ApiGateway::Method").values():
        props = method["Properties"]
        if "Integration" in props:
            route = (paths.get(props["ResourceId"].get("Ref"), "/"), props["HttpMethod"])
            integrations[route] = _render(template, props["Integration"]["Uri"])
    target = {
        ("route", "POST"): "Router",
        ("tasks", "GET"): "Registry",
        ("{name}", "GET"): "Registry",
        ("{name}", "PUT"): "Registry",
        ("{name}", "DELETE"): "Registry",
    }
    assert set(integrations) == set(target)
    for route, name in target.items():
        assert integrations[route].endswith(f":function:${{{functions[name]}}}:live/invocations"), (route, integrations[route])
    permissions = [
        p["Properties"] for p in _resources(template, "AWS::Lambda::Permission").values()
        if p["Properties"]["Principal"] == "apigateway.amazonaws.com"
    ]
    assert len(permissions) == 2 * len(target)  # the stage's and the console's test invocations
    allowed = {_render(template, p["FunctionName"]) for p in permissions}
    assert allowed == {f"arn:aws:lambda:${{AWS::Region}}:${{AWS::AccountId}}:function:${{{functions[name]}}}:live"
                       for name in FUNCTIONS}
    assert {p["Action"] for p in permissions} == {"lambda:InvokeFunction"}


# --- deploys ---------------------------------------------------------------------------------

DEPLOY_ALARMS = {
    "Router": {
        "Errors": ("AWS/Lambda", "Errors"),
        "Throttles": ("AWS/Lambda", "Throttles"),
        "UnexpectedErrors": (METRICS_NAMESPACE, "UnexpectedError"),
    },
    "Registry": {"Errors": ("AWS/Lambda", "Errors")},
}


def _deployment_config_name(canary: str) -> str:
    percent, minutes = re.fullmatch(r"(\d+)_percent_(\d+)_minutes", canary).groups()
    return f"CodeDeployDefault.LambdaCanary{percent}Percent{minutes}Minutes"


def test_each_alias_deploys_by_canary_and_rolls_back_on_its_alarms_where_the_stage_asks(stage):
    template = stage.templates["Api"]
    canary = stage.config.router_concurrency.canary
    assert (canary != "off") == (stage.config.name == "prod")
    aliases = _aliases(template)
    groups = _resources(template, "AWS::CodeDeploy::DeploymentGroup")
    alarms = _resources(template, "AWS::CloudWatch::Alarm")
    if canary == "off":  # CloudFormation moves the alias at once
        assert groups == {} and alarms == {}
        assert _resources(template, "AWS::CodeDeploy::Application") == {}
        assert all("UpdatePolicy" not in template["Resources"][alias] for alias in aliases.values())
        return
    ((application_id, application),) = _resources(template, "AWS::CodeDeploy::Application").items()
    assert application["Properties"]["ComputePlatform"] == "Lambda"
    alarm_names = {logical: alarm["Properties"]["AlarmName"] for logical, alarm in alarms.items()}
    by_name = {}
    for logical, group in groups.items():
        props = group["Properties"]
        by_name[props["DeploymentGroupName"]] = props
        assert props["ApplicationName"] == {"Ref": application_id}
        assert props["DeploymentConfigName"] == _deployment_config_name(canary)
        assert props["DeploymentStyle"] == {"DeploymentType": "BLUE_GREEN", "DeploymentOption": "WITH_TRAFFIC_CONTROL"}
        rollback = props["AutoRollbackConfiguration"]
        assert rollback["Enabled"] is True
        assert {"DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"} <= set(rollback["Events"])
        assert props["AlarmConfiguration"]["Enabled"] is True
        assert props["AlarmConfiguration"].get("IgnorePollAlarmFailure", False) is False
        role = template["Resources"][props["ServiceRoleArn"]["Fn::GetAtt"][0]]["Properties"]
        assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "codedeploy.amazonaws.com"}
    prefix = f"taskrouter-{stage.config.name}"
    assert set(by_name) == {f"{prefix}-router", f"{prefix}-registry"}
    for name, alarms_of in DEPLOY_ALARMS.items():
        group = by_name[f"{prefix}-{name.lower()}"]
        gating = {alarm_names[a["Name"]["Ref"]] for a in group["AlarmConfiguration"]["Alarms"]}
        assert gating == {f"{prefix}-{name}-Deploy-{alarm}" for alarm in alarms_of}
        # the alias moves through this group: CloudFormation hands its version change to CodeDeploy
        update = template["Resources"][aliases[name]]["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
        group_id = next(k for k, g in groups.items() if g["Properties"]["DeploymentGroupName"] == f"{prefix}-{name.lower()}")
        assert update == {"ApplicationName": {"Ref": application_id}, "DeploymentGroupName": {"Ref": group_id}}


def test_the_deploy_alarms_watch_the_aliases_and_name_their_runbook_section(stage):
    template = stage.templates["Api"]
    if stage.config.router_concurrency.canary == "off":
        return  # none (the previous test)
    functions = _functions(template)
    prefix = f"taskrouter-{stage.config.name}"
    alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in _resources(template, "AWS::CloudWatch::Alarm").values()}
    expected = {f"{prefix}-{name}-Deploy-{alarm}": (name, metric) for name, of in DEPLOY_ALARMS.items() for alarm, metric in of.items()}
    assert set(alarms) == set(expected)
    slugs = set()
    for alarm_name, (function, (namespace, metric)) in expected.items():
        props = alarms[alarm_name]
        assert (props["Namespace"], props["MetricName"], props["Statistic"]) == (namespace, metric, "Sum")
        dimensions = {d["Name"]: _render(template, d["Value"]) for d in props["Dimensions"]}
        if namespace == "AWS/Lambda":  # the alias's own invocations, every version it routes to
            assert dimensions == {
                "FunctionName": f"${{{functions[function]}}}",
                "Resource": f"${{{functions[function]}}}:live",
            }
        else:  # the router's EMF metric (Powertools), as the monitoring stack reads it
            assert dimensions == {"service": ROUTER_SERVICE}
        assert (props["Threshold"], props["ComparisonOperator"]) == (0, "GreaterThanThreshold")
        assert (props["Period"], props["EvaluationPeriods"]) == (60, 1)  # one bad minute of a 5-minute canary
        assert props["TreatMissingData"] == "notBreaching"  # a quiet canary is not a failed one
        assert "AlarmActions" not in props  # they gate deploys; the monitoring stack's alarms page
        description = props["AlarmDescription"]
        assert RUNBOOK_SLUG.search(description), description
        assert re.match(r"^[A-Z][^.]+\. ", description), "it starts with one sentence of what it means"
        slugs.add(description.rsplit("#", 1)[1])
    assert len(slugs) == len(expected)  # a section of its own each


# --- configuration ---------------------------------------------------------------------------

VALID = STAGES_FILE.read_text()


def _stages_with(tmp_path, old: str, new: str):
    assert old in VALID, old
    path = tmp_path / "stages.toml"
    path.write_text(VALID.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # [dev] comes first in stages.toml: the first match is dev's
        ("reserved = 20", "reserved = 0", r"\[dev\]: router_concurrency\.reserved: Input should be greater than or equal to 1"),
        ("reserved = 20", "reserved = 1000", r"\[dev\]: router_concurrency\.reserved: Input should be less than or equal to 900"),
        ("reserved = 20", "reserved = 5", r"\[dev\]: .*router_concurrency\.reserved must be at least 6: api_rate_limit_rps 20"),
        ("provisioned_max = 0", "provisioned_max = 30", r"\[dev\]: router_concurrency: .*provisioned_max must not exceed reserved"),
        ("provisioned_max = 0", "provisioned_max = 5", r"\[dev\]: router_concurrency: .*provisioned_min must be at least 1"),
        ("provisioned_min = 10", "provisioned_min = 95", r"\[prod\]: router_concurrency: .*provisioned_min must not exceed provisioned_max"),
        ("provisioned_max = 90", "provisioned_max = 201", r"\[prod\]: router_concurrency: .*provisioned_max must not exceed reserved"),
        ("utilization_target = 0.7", "utilization_target = 0.95", r"\[prod\]: router_concurrency\.utilization_target: Input should be less than or equal to 0\.9"),
        ('canary = "off"', 'canary = "sometimes"', r"\[dev\]: router_concurrency\.canary: Input should be"),
        ('canary = "off"', 'canary = "off"\ncolour = 3', r"\[dev\]: router_concurrency\.colour: Extra inputs are not permitted"),
    ],
)
def test_a_bad_router_concurrency_is_refused_naming_its_field(tmp_path, old, new, message):
    with pytest.raises(ConfigError, match=message):
        load_stages(_stages_with(tmp_path, old, new))


def test_a_stage_without_router_concurrency_is_refused(tmp_path):
    start, end = VALID.index("[dev.router_concurrency]"), VALID.index("[dev.budgets.zero_shot]")
    with pytest.raises(ConfigError, match=r"\[dev\]: router_concurrency: Field required"):
        load_stages(_stages_with(tmp_path, VALID[start:end], ""))


def test_the_defaults_are_no_provisioned_concurrency_and_no_canary():
    concurrency = RouterConcurrency(reserved=10)
    assert (concurrency.provisioned, concurrency.canary, concurrency.utilization_target) == (False, "off", 0.7)
    assert RouterConcurrency(reserved=10, provisioned_min=10, provisioned_max=10).provisioned  # all of it, fixed


@pytest.mark.parametrize("canary", [name for name in typing.get_args(CanaryName) if name != "off"])
def test_every_canary_the_config_takes_is_one_of_codedeploys(canary):
    config = getattr(codedeploy.LambdaDeploymentConfig, f"CANARY_{canary.upper()}")
    assert config.deployment_config_name == _deployment_config_name(canary)
