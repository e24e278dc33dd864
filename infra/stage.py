"""One deployable stage (`dev`, `prod`): every stack of TaskRouter from one typed configuration."""

from __future__ import annotations

from aws_cdk import Environment, Stage, Tags
from constructs import Construct

from infra.api import ApiStack
from infra.capture import CaptureStack
from infra.config import StageConfig, check_deployable, load_adapter_manifests, load_serving
from infra.lambda_code import check_bundle_for
from infra.model_artifacts import ModelArtifactsStack
from infra.model_hosting import ModelHostingStack
from infra.monitoring import MonitoringStack
from infra.operations import OperationsStack
from infra.registry import RegistryStack


class TaskRouterStage(Stage):
    def __init__(self, scope: Construct, config: StageConfig) -> None:
        super().__init__(scope, config.name, env=Environment(account=config.account, region=config.region))
        Tags.of(self).add("project", "taskrouter")
        Tags.of(self).add("stage", config.name)
        serving = load_serving()
        manifests = load_adapter_manifests(config)
        check_deployable(config, manifests, serving)
        check_bundle_for(config)

        self.registry = RegistryStack(self, "Registry", stage=config, termination_protection=config.retain_on_delete)
        self.artifacts = ModelArtifactsStack(
            self, "ModelArtifacts", stage=config, manifests=manifests, serving=serving,
            termination_protection=config.retain_on_delete,
        )
        self.operations = OperationsStack(self, "Operations", stage=config, termination_protection=config.retain_on_delete)
        # Every stage measures its quality: the teacher, its alarms and the kill switch wherever
        # capture.share is over 0; the records' bucket, table and workgroup only where capture.enabled
        # (infra/capture.py). Stopping for a while is the kill switch; share 0 removes it at a deploy.
        self.capture = (
            CaptureStack(
                self, "Capture", stage=config, openai_secret=self.operations.openai_secret,
                termination_protection=config.retain_on_delete,
            )
            if config.capture.measures else None
        )
        router_manifest = next((m for m in manifests if m.name == config.router_adapter), None)
        self.hosting = ModelHostingStack(
            self,
            "ModelHosting",
            stage=config,
            serving=serving,
            manifests=manifests,
            artifacts=self.artifacts,
        )
        self.api = ApiStack(
            self,
            "Api",
            stage=config,
            table=self.registry.table,
            openai_secret=self.operations.openai_secret,
            ops_mode=self.operations.ops_mode,
            endpoint_arn=self.hosting.endpoint_arn,
            serving_max_tokens=serving.max_model_len,
            capture=self.capture,
            router_adapter_tasks=router_manifest.tasks if router_manifest else None,
        )
        self.api.add_stack_dependency(self.hosting)  # the router names the endpoint: deploy it first
        if self.capture is not None:
            self.api.add_stack_dependency(self.capture)  # the router invokes the teacher, reads the switch
        self.monitoring = MonitoringStack(
            self,
            "Monitoring",
            stage=config,
            api=self.api.api,
            router=self.api.router,
            registry=self.api.registry,
            table=self.registry.table,
            component_names=self.hosting.component_names,
            ops_mode=self.operations.ops_mode,
            failover_state=self.operations.failover_state,
            endpoint_arn=self.hosting.endpoint_arn,
            teacher=self.capture.teacher if self.capture else None,
        )
