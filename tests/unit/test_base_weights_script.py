"""The base weights' staging script as CodeBuild runs it: under /bin/sh, which is dash on CodeBuild's
Ubuntu images (CodeBuild's buildspec reference: commands run in the sh shell language), with `aws`,
`pip` and huggingface_hub stubbed by scripts that log their calls."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.base_weights import IGNORED, marker_key, staging_script

SH = shutil.which("dash") or "/bin/sh"  # CodeBuild's (and Debian's) /bin/sh is dash: bash-only options stop it
PREFIX = "base/org/model/" + "a" * 40 + "/"


@pytest.fixture
def stubs(tmp_path: Path):
    bin_dir, module_dir, log = tmp_path / "bin", tmp_path / "py", tmp_path / "calls.log"
    bin_dir.mkdir()
    (module_dir / "huggingface_hub").mkdir(parents=True)
    # aws: logs its arguments; head-object answers as AWS_HEAD_EXIT says, sync as AWS_SYNC_EXIT says
    (bin_dir / "aws").write_text(
        "#!/bin/sh\n"
        f'echo "aws $*" >> "{log}"\n'
        'case "$2" in head-object) exit "${AWS_HEAD_EXIT:-255}";; sync) exit "${AWS_SYNC_EXIT:-0}";; esac\n'
        'cat > /dev/null\n'
    )
    (bin_dir / "pip").write_text(f'#!/bin/sh\necho "pip $*" >> "{log}"\n')
    (bin_dir / "python3").symlink_to(sys.executable)
    (module_dir / "huggingface_hub" / "__init__.py").write_text(
        "import json, os, pathlib\n"
        "def snapshot_download(repo_id, *, revision, local_dir, ignore_patterns):\n"
        f"    open({str(log)!r}, 'a').write(json.dumps(['snapshot_download', repo_id, revision, ignore_patterns]) + '\\n')\n"
        "    pathlib.Path(local_dir, '.cache').mkdir(parents=True, exist_ok=True)\n"
        "    pathlib.Path(local_dir, 'config.json').write_text('{}')\n"
    )
    for stub in ("aws", "pip"):
        (bin_dir / stub).chmod(0o755)

    def run(**extra: str) -> tuple[int, list[str]]:
        env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": str(module_dir), "MODEL_ID": "org/model",
            "REVISION": "a" * 40, "BUCKET": "bucket", "PREFIX": PREFIX, "MARKER": marker_key(PREFIX),
            "IGNORED": json.dumps(IGNORED), "WEIGHTS": str(tmp_path / "weights"), **extra,
        }
        done = subprocess.run([SH, "-c", staging_script()], env=env, capture_output=True, text=True, timeout=60)
        calls = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return done.returncode, calls

    return run, tmp_path


def test_a_first_deploy_copies_the_revision_then_writes_the_marker_last(stubs):
    run, tmp_path = stubs
    code, calls = run()
    assert code == 0, calls
    assert calls[0].startswith("aws s3api head-object --bucket bucket --key " + marker_key(PREFIX))
    assert json.loads(calls[2]) == ["snapshot_download", "org/model", "a" * 40, IGNORED]
    assert calls[3] == f"aws s3 sync {tmp_path / 'weights'} s3://bucket/{PREFIX} --only-show-errors"
    assert calls[4] == f"aws s3 cp - s3://bucket/{marker_key(PREFIX)}"
    assert not (tmp_path / "weights" / ".cache").exists()  # the hub's bookkeeping is not copied


def test_a_staged_revision_is_not_copied_again(stubs):
    run, _ = stubs
    code, calls = run(AWS_HEAD_EXIT="0")
    assert code == 0 and len(calls) == 1 and "head-object" in calls[0]


def test_a_failed_copy_never_writes_the_marker_and_fails_the_build(stubs):
    run, _ = stubs
    code, calls = run(AWS_SYNC_EXIT="2")
    assert code != 0
    assert not any(call.startswith("aws s3 cp") for call in calls)
