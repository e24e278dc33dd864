"""The router's concurrency and both functions' deploys (issue 11, points 4 and 5; issue 17, point 4.3):
API Gateway invokes each function through its alias `live` on a published version; the router's
concurrency is reserved in every stage and provisioned on its alias where the stage says so (prod); a new
version reaches each alias through a CodeDeploy canary that rolls back on the Api stack's deploy alarms
where the stage says so (prod). A canary weights the alias, where Lambda refuses changes to provisioned
concurrency: there it is fixed, and Application Auto Scaling scales it only on an alias nothing weights.
The stage configuration that sizes it refuses bad combinations."""

from __future__ import annotations

import json
import re
import typing

import pytest
from aws_cdk import aws_codedeploy as codedeploy

from infra.api import LIVE_ALIAS, METRICS_NAMESPACE, ROUTER_SERVICE
from infra.app import build_app
from infra.config import ROOT, STAGES_FILE, CanaryName, ConfigError, RouterConcurrency, load_stages
from infra.stage import TaskRouterStage

STAGES = load_stages()

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


def _weighted(template: dict) -> set[str]:
    """The aliases a CodeDeploy deployment group moves, by weights: CloudFormation hands their version
    changes to it (UpdatePolicy CodeDeployLambdaAliasUpdate)."""
    return {k for k, a in _resources(template, "AWS::Lambda::Alias").items()
            if "CodeDeployLambdaAliasUpdate" in a.get("UpdatePolicy", {})}


def _scaled_aliases(template: dict) -> dict[str, dict]:
    """Alias logical id -> the Application Auto Scaling target on its provisioned concurrency."""
    scaled = {}
    for target in _resources(template, "AWS::ApplicationAutoScaling::ScalableTarget").values():
        props = target["Properties"]
        assert (props["ServiceNamespace"], props["ScalableDimension"]) == ("lambda", "lambda:function:ProvisionedConcurrency")
        (alias,) = [k for k in _resources(template, "AWS::Lambda::Alias") if k in json.dumps(props["ResourceId"])]
        scaled[alias] = props
    return scaled


def test_provisioned_concurrency_is_fixed_on_an_alias_a_canary_weights(stage):
    """"You can add a routing configuration to an alias that has provisioned concurrency. However, you can't
    manage provisioned concurrency settings on the alias while the routing configuration is in place"
    (Lambda Developer Guide, "Configuring provisioned concurrency"): Application Auto Scaling changing it on
    the alias CodeDeploy weights would be refused during every canary, and for good once a stopped one left
    weights behind. Prod deploys by canary and keeps a fixed amount; nothing scales a weighted alias."""
    template = stage.templates["Api"]
    concurrency = stage.config.router_concurrency
    assert concurrency.provisioned == (stage.config.name == "prod")  # dev may cold start, prod may not
    aliases = _aliases(template)
    router_alias = template["Resources"][aliases["Router"]]["Properties"]
    registry_alias = template["Resources"][aliases["Registry"]]["Properties"]
    assert "ProvisionedConcurrencyConfig" not in registry_alias
    scaled = _scaled_aliases(template)
    assert not set(scaled) & _weighted(template)  # never both on one alias
    if not concurrency.provisioned:
        assert "ProvisionedConcurrencyConfig" not in router_alias
        assert scaled == {} and _resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy") == {}
        return
    assert router_alias["ProvisionedConcurrencyConfig"] == {"ProvisionedConcurrentExecutions": concurrency.provisioned_min}
    if concurrency.canary != "off":
        assert aliases["Router"] in _weighted(template)
        assert scaled == {} and _resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy") == {}
        assert concurrency.provisioned_min == concurrency.provisioned_max  # what stays on the alias is what the stage says


def _stage_template(tmp_path_factory, name: str, **concurrency) -> dict:
    config = STAGES[name]
    config = config.model_copy(update={"router_concurrency": config.router_concurrency.model_copy(update=concurrency)})
    app = build_app({name: config}, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    (stage,) = [child for child in app.node.children if isinstance(child, TaskRouterStage)]
    return {s.hierarchical_id.split("/")[-1]: s.template for s in stage.synth().stacks}["Api"]


@pytest.fixture(scope="module")
def unweighted(tmp_path_factory) -> dict:
    """Prod's Api stack without a canary and with a provisioned range: what scales on utilization."""
    return _stage_template(tmp_path_factory, "prod", canary="off", provisioned_min=10, provisioned_max=90)


def test_provisioned_concurrency_scales_on_utilization_on_an_alias_nothing_weights(unweighted):
    """Application Auto Scaling on the alias's provisioned concurrency, as AWS documents it for Lambda
    (Lambda Developer Guide, "Configuring concurrency with the Lambda API": a scalable target on
    function:NAME:ALIAS, lambda:function:ProvisionedConcurrency, target tracking on
    LambdaProvisionedConcurrencyUtilization), where CloudFormation moves the alias at once, never weighted."""
    template = unweighted
    aliases = _aliases(template)
    assert _weighted(template) == set() and _resources(template, "AWS::CodeDeploy::DeploymentGroup") == {}
    router_alias = template["Resources"][aliases["Router"]]["Properties"]
    assert router_alias["ProvisionedConcurrencyConfig"] == {"ProvisionedConcurrentExecutions": 10}
    ((alias, props),) = _scaled_aliases(template).items()
    assert alias == aliases["Router"]
    assert (props["MinCapacity"], props["MaxCapacity"]) == (10, 90)
    assert json.dumps(props["ResourceId"]).endswith(':live"]]}')
    assert "AWSServiceRoleForApplicationAutoScaling_LambdaConcurrency" in json.dumps(props["RoleARN"])
    target_id = next(iter(_resources(template, "AWS::ApplicationAutoScaling::ScalableTarget")))
    ((policy,),) = [list(_resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy").values())]
    policy = policy["Properties"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["ScalingTargetId"] == {"Ref": target_id}
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"] == {"PredefinedMetricType": "LambdaProvisionedConcurrencyUtilization"}
    assert tracking["TargetValue"] == 0.7


def test_a_canary_with_a_provisioned_range_is_refused_naming_the_fix(tmp_path):
    """The combination issue 17 found: a range to scale, on the alias a canary weights; refused where
    stages.toml is read, naming the field."""
    with pytest.raises(ConfigError, match=r"\[prod\]: router_concurrency: .*a canary \(10_percent_5_minutes\) weights "
                                          r".* set provisioned_min equal to provisioned_max \(now 10 and 90\)"):
        load_stages(_stages_with(tmp_path, "provisioned_max = 10", "provisioned_max = 90"))


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
        # a stopped deployment is rolled back too: it leaves no weights on the alias
        assert set(rollback["Events"]) == {"DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM", "DEPLOYMENT_STOP_ON_REQUEST"}
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
        ("provisioned_max = 10", "provisioned_max = 201", r"\[prod\]: router_concurrency: .*provisioned_max must not exceed reserved"),
        ('canary = "off"', 'canary = "off"\nutilization_target = 0.95', r"\[dev\]: router_concurrency\.utilization_target: Input should be less than or equal to 0\.9"),
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


def test_the_runbook_recovers_an_alias_a_stopped_canary_left_weighted():
    """docs/runbook.md, beside the router's deploy sections: stop the deployment rolling back, put the alias
    on one version with no weights (Lambda Developer Guide, "Traffic shifting using aliases"), finish a
    failed rollback, deploy again."""
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    section = runbook.split("## Router alias left weighted\n", 1)[1].split("\n## ", 1)[0]
    commands = " ".join(section.split())
    for step in ("aws deploy stop-deployment --deployment-id <id> --auto-rollback-enabled",
                 "aws lambda update-alias --function-name <Router...> --name live --function-version <FunctionVersion> "
                 "--routing-config AdditionalVersionWeights={}",
                 "aws cloudformation continue-update-rollback --stack-name prod-Api",
                 "aws lambda get-alias --function-name <Router...> --name live"):
        assert step in commands, step
    deploy_errors = runbook.split("## Router deploy errors\n", 1)[1].split("\n## ", 1)[0]
    assert '"Router alias left weighted"' in " ".join(deploy_errors.split())
    assert runbook.index("## Router deploy errors") < runbook.index("## Router alias left weighted")
