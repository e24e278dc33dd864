"""A deployed stage as `taskrouter ops` finds it (moto): the Operations and Monitoring stacks, whose
outputs name the mode and state parameters and the alarm topic."""

from __future__ import annotations

import json

import boto3


def create_stage_stacks(stage: str, mode_parameter: str, state_parameter: str, topic_arn: str) -> None:
    cloudformation = boto3.client("cloudformation")
    for stack, outputs in (
        (f"{stage}-Operations", {"OpsModeParameter": mode_parameter, "FailoverStateParameter": state_parameter}),
        (f"{stage}-Monitoring", {"AlarmTopicArn": topic_arn}),
    ):
        template = {
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},  # a stack needs one resource
            "Outputs": {key: {"Value": value} for key, value in outputs.items()},
        }
        cloudformation.create_stack(StackName=stack, TemplateBody=json.dumps(template))
