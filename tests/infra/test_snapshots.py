"""Every stack of both stages, snapshotted: any change to the infrastructure shows in review."""

from __future__ import annotations

import re

import pytest
from syrupy.extensions.json import JSONSnapshotExtension

from tests.infra.conftest import STAGES, stacks_of
# 64 hex: asset hashes; 32 hex after `CurrentVersion<8 hex>`: a Lambda version's id, a digest of its code
_ASSET_HASH = re.compile(r"\b[0-9a-f]{64}\b|(?<=CurrentVersion[0-9A-F]{8})[0-9a-f]{32}\b")


def _without_asset_hashes(value):
    """Asset hashes change with every code edit; the template around them is what is reviewed."""
    if isinstance(value, dict):
        # keys too: a Lambda version's logical id carries its digest
        return {_ASSET_HASH.sub("<asset-hash>", key): _without_asset_hashes(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_asset_hashes(item) for item in value]
    if isinstance(value, str):
        return _ASSET_HASH.sub("<asset-hash>", value)
    return value


@pytest.fixture
def snapshot_json(snapshot):
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize(
    ("stack_id", "stage_name"),
    [(stack_id, name) for name in sorted(STAGES) for stack_id in stacks_of(STAGES[name])],
    ids=lambda value: value,
)
def test_stack_matches_snapshot(synthesized, snapshot_json, stage_name, stack_id):
    template = synthesized.stages[stage_name].templates[stack_id]
    assert _without_asset_hashes(template) == snapshot_json


def test_every_stack_is_snapshotted(synthesized):
    for stage in synthesized.stages.values():
        assert sorted(stage.templates) == sorted(stacks_of(stage.config))
