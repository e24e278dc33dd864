"""`taskrouter adapter train` never lies and never loses data: a run that cannot give a sound adapter
(a loss gone nan, a bad base, checkpoint or --out, Ctrl-C) says so in one line naming the file and
the fix, with no traceback, and leaves --out as it found it; --force replaces a whole adapter."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from taskrouter.cli import main

from .tiny_base import train_command

torch = pytest.importorskip("torch")  # the training extra; `make test` installs it

PROG = "taskrouter adapter train:"


@pytest.fixture(scope="module")
def adapter(tiny_base, tmp_path_factory) -> Path:
    """A trained adapter with its archive, copied where a test needs an --out that holds one."""
    out = tmp_path_factory.mktemp("trained") / "adapter"
    assert main(train_command(tiny_base, out)) == 0
    return out


@pytest.fixture
def held(adapter, tmp_path) -> Path:
    return Path(shutil.copytree(adapter, tmp_path / "held"))


def files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}  # hidden ones too: no staging left


def error_line(err: str) -> str:
    """The command's one error line (the last of stderr, after any progress bar); no traceback."""
    assert "Traceback" not in err and [line for line in err.splitlines() if line.startswith(PROG)] == [
        err.splitlines()[-1]
    ], err
    return err.splitlines()[-1]


def copy_of(base: Path, folder: Path) -> Path:
    return Path(shutil.copytree(base, folder))


@pytest.fixture
def poisoned_base(tiny_base, tmp_path) -> Path:
    """The tiny base with one weight nan, as a corrupt download or a bad conversion leaves it."""
    from safetensors.torch import load_file, save_file

    base = copy_of(tiny_base, tmp_path / "poisoned")
    weights = load_file(base / "model.safetensors")
    weights["model.norm.weight"][0] = float("nan")
    save_file(weights, base / "model.safetensors", metadata={"format": "pt"})
    return base


def test_a_loss_gone_nan_before_any_update_names_the_base_and_writes_nothing(poisoned_base, tmp_path, capsys):
    assert main(train_command(poisoned_base, tmp_path / "out")) == 1
    line = error_line(capsys.readouterr().err)
    assert "nan at step 1, before any update" in line and str(poisoned_base) in line and "no adapter written" in line
    assert not (tmp_path / "out").exists()


def test_a_loss_that_diverges_stops_the_run_and_writes_nothing(tiny_base, held, capsys):
    before = files(held)
    assert main(train_command(tiny_base, held, "--learning-rate", "1e30", "--force")) == 1
    assert "training diverged: lower --learning-rate (now 1e+30)" in error_line(capsys.readouterr().err)
    assert files(held) == before


@pytest.mark.parametrize("option", [
    ["--learning-rate", "nan"], ["--learning-rate", "inf"], ["--learning-rate", "0"], ["--seed", "-1"],
])
def test_a_rate_or_seed_no_run_could_take_is_a_usage_error(tiny_base, tmp_path, option, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(train_command(tiny_base, tmp_path / "out", *option))
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1 and f"argument {option[0]}: must be" in err


@pytest.mark.parametrize("kind", ["a file", "an adapter"])
def test_an_out_that_cannot_take_the_adapter_is_refused_before_training(tiny_base, held, kind, capsys):
    out = held / "manifest.json" if kind == "a file" else held
    before = files(held)
    assert main(train_command(tiny_base, out)) == 1
    captured = capsys.readouterr()
    line = error_line(captured.err)
    assert ("is a file, not a folder" in line) if kind == "a file" else ("holds an adapter" in line and "--force" in line)
    assert "step" not in captured.out and files(held) == before


def test_force_replaces_every_file_of_the_adapter_held(tiny_base, held):
    old = files(held)
    assert main(train_command(tiny_base, held, "--force", "--no-archive", seed=8)) == 0
    new = files(held)
    assert "adapter.tar.gz" not in new  # the old archive would not match the new weights
    assert new["adapter_model.safetensors"] != old["adapter_model.safetensors"]
    manifest = json.loads(new["manifest.json"])
    assert manifest["seed"] == 8 and manifest["archive"] is None
    assert not [name for name in new if name.startswith(".")]


def test_a_crash_while_saving_leaves_the_adapter_held_whole(tiny_base, held, tmp_path, monkeypatch, capsys):
    def disk_full(folder: Path) -> None:
        raise OSError(28, "No space left on device", str(folder / "adapter.tar.gz"))

    monkeypatch.setattr("taskrouter.training.train._archive", disk_full)
    before = files(held)
    assert main(train_command(tiny_base, held, "--force", seed=8)) == 1
    assert "No space left on device" in error_line(capsys.readouterr().err)
    assert files(held) == before
    with tarfile.open(held / "adapter.tar.gz") as archive:  # still the archive of the weights beside it
        assert archive.extractfile("adapter_model.safetensors").read() == before["adapter_model.safetensors"]
    assert main(train_command(tiny_base, tmp_path / "fresh")) == 1 and not (tmp_path / "fresh").exists()


def test_ctrl_c_stops_in_one_line_and_leaves_out_as_it_was(tiny_base, held, tmp_path, monkeypatch, capsys):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("taskrouter.training.train._batch", interrupted)
    before = files(held)
    checkpoints = tmp_path / "checkpoints"
    try:
        code = main(train_command(tiny_base, held, "--force", "--checkpoint-dir", str(checkpoints)))
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C reached the caller as a traceback")
    line = error_line(capsys.readouterr().err)
    assert code == 130 and "Ctrl-C" in line and str(checkpoints) in line
    assert files(held) == before


def _truncated(file: Path) -> None:
    torch.save({"run": {}, "adapter": {"lora": torch.zeros(4096)}}, file)
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


CHECKPOINTS = {
    "empty": lambda file: file.write_bytes(b""),
    "truncated": _truncated,
    "another program's": lambda file: torch.save({"weights": torch.zeros(2)}, file),
    "not a checkpoint": lambda file: file.write_text("training went well\n"),
}


@pytest.mark.parametrize("kind", CHECKPOINTS)
def test_a_checkpoint_that_cannot_be_resumed_is_named_with_its_fix(tiny_base, tmp_path, kind, capsys):
    checkpoint = tmp_path / "checkpoints" / "training-state.pt"
    checkpoint.parent.mkdir()
    CHECKPOINTS[kind](checkpoint)
    code = main(train_command(tiny_base, tmp_path / "out", "--checkpoint-dir", str(checkpoint.parent)))
    line = error_line(capsys.readouterr().err)
    assert code == 1 and str(checkpoint) in line and "delete it to start afresh" in line
    assert not (tmp_path / "out").exists()


CONFIGS = {
    "cut short": '{"model_type": "llama", "hidden_size": 3',
    "not an object": "[]",
    "a field of the wrong type": None,  # the tiny base's own, hidden_size a string
}


@pytest.mark.parametrize("kind", CONFIGS)
def test_a_base_with_a_bad_config_is_named_with_its_fix(tiny_base, tmp_path, kind, capsys):
    base = copy_of(tiny_base, tmp_path / "base")
    config = base / "config.json"
    text = CONFIGS[kind]
    if text is None:
        text = json.dumps({**json.loads(config.read_text()), "hidden_size": "big"})
    config.write_text(text)
    code = main(train_command(base, tmp_path / "out"))
    line = error_line(capsys.readouterr().err)
    assert code == 1 and f"{config} is not a model configuration" in line and "restore it" in line
    assert not (tmp_path / "out").exists()


def test_a_gguf_base_without_gguf_names_the_extra_that_brings_it(tmp_path, monkeypatch, capsys):
    """The training extra reads model folders; a GGUF file needs the local-model extra's `gguf`, which
    transformers asks for without naming the module."""
    import sys

    from taskrouter.extras import install_line
    from taskrouter.model_server.bundled import smollm2_gguf

    gguf = smollm2_gguf()  # installed by `make test`'s set-up
    monkeypatch.setitem(sys.modules, "gguf", None)  # as if only the training extra were installed
    code = main(["adapter", "train", "--dataset", "datasets/example.jsonl", "--tasks", "tasks/default_tasks.json",
                 "--base-model", str(gguf), "--out", str(tmp_path / "adapter"), "--max-steps", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith(PROG), err
    assert "gguf" in err.lower() and err.rstrip().endswith(install_line("local-model"))
    assert not (tmp_path / "adapter").exists()
