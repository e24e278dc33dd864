"""A new stage's registry gets the default tasks on its first deploy, through a custom resource whose
handler acts on Create only (handlers/seed_tasks.py; tests/unit/test_seed_tasks.py runs it)."""

from __future__ import annotations

import json

from taskrouter.repository import DEFAULT_TASKS_FILE


def _resources(template: dict, kind: str) -> dict[str, dict]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def test_the_default_tasks_are_seeded_by_a_create_only_custom_resource(stage, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # the handler makes its client at import
    registry = stage.templates["Api"]  # stateless: the Registry stack holds its table alone
    (seeded,) = _resources(registry, "Custom::DefaultTasks").values()
    props = seeded["Properties"]
    wanted = json.loads(DEFAULT_TASKS_FILE.read_text())["tasks"]
    assert [t["name"] for t in props["Tasks"]] == [t["name"] for t in wanted]
    assert "Tasks" in json.dumps(props["TableName"])  # the Registry stack's table, by reference
    functions = _resources(registry, "AWS::Lambda::Function")
    (seed_id,) = [k for k, f in functions.items() if f["Properties"].get("Handler") == "taskrouter.handlers.seed_tasks.on_event"]
    # the handler acts on Create only: it is the Provider's onEvent, with no isComplete step
    provider_env = [f["Properties"].get("Environment", {}).get("Variables", {}) for f in functions.values()]
    assert any(env.get("USER_ON_EVENT_FUNCTION_ARN") == {"Fn::GetAtt": [seed_id, "Arn"]} for env in provider_env)
    assert not any("USER_IS_COMPLETE_FUNCTION_ARN" in env for env in provider_env)
    from taskrouter.handlers import seed_tasks

    for kind in ("Update", "Delete"):  # what CloudFormation sends on later deploys and on removal
        assert seed_tasks.on_event({"RequestType": kind, "PhysicalResourceId": "default-tasks", "ResourceProperties": props,
                                    "OldResourceProperties": props}) == {"PhysicalResourceId": "default-tasks"}
    seed_role = functions[seed_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = [s for p in _resources(registry, "AWS::IAM::Policy").values() if p["Properties"]["Roles"] == [{"Ref": seed_role}]
                  for s in p["Properties"]["PolicyDocument"]["Statement"]
                  if "dynamodb" in json.dumps(s["Action"])]
    assert {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])} == {
        "dynamodb:Query", "dynamodb:UpdateItem"}
