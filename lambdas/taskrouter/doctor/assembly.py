"""The stage's synthesized templates, read from the cloud assembly `make synth` (and every
`npx cdk deploy`) writes to cdk.out/: exactly what a deploy sends to CloudFormation, with no CDK
import here. A missing or outdated assembly is told, with `make synth` as the fix."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskrouter.repository import ROOT

CDK_OUT = ROOT / "cdk.out"
SYNTH_FIX = "run `make synth`, then the doctor again"
_STACK = "aws:cloudformation:stack"
_NESTED_ASSEMBLY = "cdk:cloud-assembly"
DEFAULT_BOOTSTRAP_PARAMETER = "/cdk-bootstrap/hnb659fds/version"  # CDK's default qualifier


class AssemblyError(Exception):
    """The assembly cannot be used; the message says why (one line), the fix is SYNTH_FIX."""


@dataclass(frozen=True)
class StackTemplate:
    stack_id: str  # the stack's id in the stage: "Api"
    stack_name: str  # CloudFormation's name: "dev-Api"
    template: dict[str, Any]

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        """The stack's resources of one type, by logical id."""
        return {
            logical_id: resource
            for logical_id, resource in self.template.get("Resources", {}).items()
            if resource.get("Type") == resource_type
        }


@dataclass(frozen=True)
class StageAssembly:
    stacks: tuple[StackTemplate, ...]
    bootstrap_version_needed: int  # the lowest bootstrap version every stack and asset accepts
    bootstrap_parameter: str  # the SSM parameter the templates read the bootstrap version from

    def stack(self, stack_id: str) -> StackTemplate | None:
        return next((stack for stack in self.stacks if stack.stack_id == stack_id), None)


def sources(root: Path = ROOT) -> list[Path]:
    """What synth reads: a change to any of them after the assembly was written makes it outdated."""
    return [
        root / "infra" / "stages.toml", root / "cdk.json", root / "app.py",
        *sorted((root / "infra").glob("*.py")), *sorted((root / "model_artifacts").rglob("*.json")),
    ]


def read_assembly(stage: str, region: str, cdk_out: Path = CDK_OUT, inputs: Iterable[Path] | None = None) -> StageAssembly:
    top = _manifest(cdk_out / "manifest.json", f"{_shown(cdk_out)} holds no cloud assembly")
    directory = next(
        (
            artifact["properties"]["directoryName"]
            for artifact in top.get("artifacts", {}).values()
            if artifact.get("type") == _NESTED_ASSEMBLY and artifact.get("properties", {}).get("displayName") == stage
        ),
        None,
    )
    if directory is None:
        raise AssemblyError(f"{_shown(cdk_out)} holds no stage {stage!r}")
    manifest_path = cdk_out / directory / "manifest.json"
    manifest = _manifest(manifest_path, f"{_shown(cdk_out / directory)} is incomplete")
    _check_current(manifest_path, inputs if inputs is not None else sources())
    stacks, versions, parameter = [], [], None
    for artifact in manifest.get("artifacts", {}).values():
        properties = artifact.get("properties", {})
        if "requiresBootstrapStackVersion" in properties:  # stacks and their asset manifests
            versions.append(int(properties["requiresBootstrapStackVersion"]))
            parameter = parameter or properties.get("bootstrapStackVersionSsmParameter")
        if artifact.get("type") != _STACK:
            continue
        synthesized_region = str(artifact.get("environment", "")).rpartition("/")[2]
        if synthesized_region != region:
            raise AssemblyError(f"{_shown(cdk_out)} has stage {stage!r} in {synthesized_region}, "
                                f"infra/stages.toml puts it in {region}: it is outdated")
        template_path = cdk_out / directory / properties["templateFile"]
        template = _manifest(template_path, f"{_shown(template_path)} is missing")
        versions.append(_version_the_rule_needs(template))
        stacks.append(StackTemplate(
            stack_id=str(artifact.get("displayName", "")).rpartition("/")[2],
            stack_name=str(properties.get("stackName", "")),
            template=template,
        ))
    if not stacks:
        raise AssemblyError(f"{_shown(cdk_out / directory)} holds no stack")
    return StageAssembly(tuple(stacks), max(versions), parameter or DEFAULT_BOOTSTRAP_PARAMETER)


def _version_the_rule_needs(template: dict[str, Any]) -> int:
    """CDK's `CheckBootstrapVersion` rule refuses the versions it lists (`Fn::Not` of `Fn::Contains`
    [["1", ..., "5"], BootstrapVersion]): the first version it accepts is one more than the last."""
    refused: list[int] = []
    for assertion in template.get("Rules", {}).get("CheckBootstrapVersion", {}).get("Assertions", []):
        contains = assertion.get("Assert", {}).get("Fn::Not", [{}])[0].get("Fn::Contains", [[]])
        refused += [int(version) for version in contains[0] if str(version).isdigit()]
    return max(refused, default=0) + 1


def _check_current(manifest: Path, inputs: Iterable[Path]) -> None:
    written = manifest.stat().st_mtime
    newer = [path for path in inputs if path.exists() and path.stat().st_mtime > written]
    if newer:
        newest = max(newer, key=lambda path: path.stat().st_mtime)
        raise AssemblyError(f"{_shown(manifest.parent.parent)} is older than {_shown(newest)}: it may not be what a "
                            "deploy sends")


def _manifest(path: Path, missing: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise AssemblyError(missing) from None
    except (OSError, ValueError) as error:
        raise AssemblyError(f"{_shown(path)}: {error}") from None


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
