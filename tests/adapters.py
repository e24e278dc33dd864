"""Adapter manifests for the tests: an archive as `taskrouter adapter train` writes it, and its
deployment manifest (model_artifacts/adapters/<name>.json), in a temporary folder."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from infra.config import StageConfig


# The tasks an adapter was trained on (its training manifest's tasks.names): a router adapter lists them.
TRAINED_ON = ("meeting_recap", "follow_up_email")


def make_adapter(
    folder: Path, name: str, stage: StageConfig, *, rank: int = 16, s3_uri: str | None = None,
    tasks: tuple[str, ...] | list[str] | None = TRAINED_ON,
) -> Path:
    """The manifest's path; its archive beside it, unless it is to be found at `s3_uri`. `tasks` None: a
    manifest that lists none."""
    archive = folder / f"{name}.tar.gz"
    if s3_uri is None:
        with tarfile.open(archive, "w:gz") as packed:
            for member, content in (("adapter_config.json", json.dumps({"r": rank, "name": name})), ("adapter_model.safetensors", name * 10)):
                data = content.encode()
                info = tarfile.TarInfo(member)
                info.size = len(data)
                packed.addfile(info, io.BytesIO(data))
    manifest = {
        "name": name,
        "description": f"{name}, for a test",
        "base_model": stage.base_model.model_dump(),
        "adapter": {"method": "qlora", "rank": rank, **({"archive_s3_uri": s3_uri} if s3_uri else {"archive_file": str(archive)})},
        **({"tasks": list(tasks)} if tasks is not None else {}),
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(manifest))
    return path
