"""What `taskrouter doctor` reads of a stage's templates, read from the real synthesized assembly
(the same cdk.out layout `make synth` writes): every number it checks quotas against."""

from __future__ import annotations

from taskrouter.doctor import needs
from taskrouter.doctor.assembly import read_assembly
from tests.infra.conftest import STACKS, STAGES


def _assembly(synthesized, stage: str):
    return read_assembly(stage, STAGES[stage].region, synthesized.outdir, inputs=[])


def test_each_stage_names_its_stacks_and_the_bootstrap_it_needs(synthesized):
    for name in STAGES:
        assembly = _assembly(synthesized, name)
        measures = ("Capture",) if STAGES[name].capture.measures else ()  # the teacher: every stage that measures
        assert sorted(stack.stack_name for stack in assembly.stacks) == sorted(
            f"{name}-{stack}" for stack in STACKS + measures)
        assert assembly.bootstrap_version_needed >= 6  # CDK's CheckBootstrapVersion refuses 1 to 5
        assert assembly.bootstrap_parameter == "/cdk-bootstrap/hnb659fds/version"


def test_the_lambda_concurrency_each_stage_takes(synthesized):
    for name, config in STAGES.items():
        functions = {function.label: function for function in needs.lambda_concurrency(_assembly(synthesized, name))}
        # the teacher on every stage that measures: one at a time, its bound (infra/capture.py)
        assert set(functions) == {"router", "alarm handler"} | ({"teacher"} if config.capture.measures else set())
        router = functions["router"]
        assert (router.reserved, router.provisioned) == (config.router_concurrency.reserved,
                                                          config.router_concurrency.provisioned_max)
        assert router.takes == config.router_concurrency.reserved  # provisioned counts within it
        assert functions["alarm handler"].takes == 1
        if config.capture.measures:
            assert (functions["teacher"].reserved, functions["teacher"].takes) == (1, 1)


def test_the_endpoint_instances_each_stage_may_run(synthesized):
    for name, config in STAGES.items():
        (endpoint,) = needs.endpoint_instances(_assembly(synthesized, name))
        assert endpoint == needs.EndpointInstances(config.gpu_instance_type, config.gpu_instance_count,
                                                   config.scaling.max_copies + 1)


def test_what_else_each_stage_needs_of_its_region(synthesized):
    for name in STAGES:
        assembly = _assembly(synthesized, name)
        assert [environment.label for environment in needs.build_environments(assembly)] == ["Linux/Small"]
        types = needs.resource_types(assembly)
        assert "AWS::SageMaker::InferenceComponent" in types and "AWS::Lambda::Function" in types
        assert not [name for name in types if not name.startswith("AWS::") or name == "AWS::CDK::Metadata"]
