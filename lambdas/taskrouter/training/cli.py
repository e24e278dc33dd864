"""`taskrouter adapter train` (docs/training.md).

    taskrouter adapter train --dataset FILE.jsonl --base-model ID_OR_DIR --out DIR [--force]
                             [--epochs N] [--max-steps N] [--seed S] [--rank R] [--tasks FILE]
                             [--revision COMMIT] [--learning-rate LR] [--batch-size N]
                             [--checkpoint-dir DIR [--checkpoint-every N]] [--no-archive]
    taskrouter adapter launch ...   (taskrouter/training/launch.py: the same, as a SageMaker training job)

An error is one line on stderr and exit 1 (2: the command line itself); Ctrl-C, one line and 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from taskrouter.core.task_spec import load_task_file
from taskrouter.core.validation import describe
from taskrouter.arguments import OneLineParser, positive_int
from taskrouter.evaluation.dataset import DatasetError
from taskrouter.extras import install_line
from taskrouter.training.options import add_training_options

PROG = "taskrouter adapter train"


def main(argv: list[str]) -> int:
    if argv[:1] == ["launch"]:  # its module imports no SageMaker SDK until a job is launched
        from taskrouter.training.launch import main as launch_main

        return launch_main(argv[1:])
    if argv[:1] != ["train"]:
        print("taskrouter adapter: the command is `taskrouter adapter train ...` or `taskrouter adapter launch ...`",
              file=sys.stderr)
        return 2
    args = _parser().parse_args(argv[1:])
    try:
        return _train(args)
    except KeyboardInterrupt:
        print(f"{PROG}: stopped (Ctrl-C) before the adapter was saved: {args.out} is as it was; "
              f"{_resuming(args)}", file=sys.stderr)
        return 130
    except ImportError as error:  # an extra is not installed
        missing = f"{error.name} is missing" if error.name else _one_line(error).rstrip(".")
        print(f"{PROG}: {missing}: {_extra_for(error)}", file=sys.stderr)
        return 1


def _extra_for(error: ImportError) -> str:
    """What installs the missing module: a GGUF base needs the local-model extra's gguf (transformers
    says so without naming the module), bitsandbytes the training-gpu one, anything else training's."""
    if error.name == "gguf" or "gguf" in str(error).lower():
        return install_line("local-model")
    if (error.name or "").split(".")[0] == "bitsandbytes":
        return f"{install_line('training-gpu')} (with a CUDA build of torch)"
    return f"{install_line('training')} (for QLoRA on a GPU, the 'training-gpu' extra with a CUDA build of torch)"


def _train(args: argparse.Namespace) -> int:
    from taskrouter.training.train import Checkpoints, HyperParameters, train

    hyper = HyperParameters(
        epochs=args.epochs, max_steps=args.max_steps, seed=args.seed, rank=args.rank,
        learning_rate=args.learning_rate, batch_size=args.batch_size, alpha=2 * args.rank,
    )
    try:
        tasks = load_task_file(Path(args.tasks), updated_at="")
        manifest = train(
            Path(args.dataset), tasks, args.base_model, Path(args.out), hyper, revision=args.revision,
            checkpoints=Checkpoints(Path(args.checkpoint_dir), args.checkpoint_every) if args.checkpoint_dir else None,
            archive=args.archive, force=args.force,
        )
    except ValidationError as error:
        print(f"{PROG}: {args.tasks}: {describe(error)}", file=sys.stderr)
        return 1
    except (DatasetError, ValueError, OSError) as error:  # the training module's own errors are ValueErrors
        print(f"{PROG}: {_one_line(error)}", file=sys.stderr)
        return 1
    except ImportError:
        raise
    except Exception as error:  # torch's or a library's, out of memory among them: still one line
        print(f"{PROG}: {type(error).__name__}: {_one_line(error)}", file=sys.stderr)
        return 1
    result = manifest["result"]
    print(
        f"adapter ({manifest['method']}, rank {hyper.rank}) saved to {args.out} after {result['steps']} steps "
        f"in {result['seconds']} s: train loss {result['final_train_loss']}, validation loss {result['validation_loss']}"
    )
    return 0


def _resuming(args: argparse.Namespace) -> str:
    if args.checkpoint_dir:
        return f"the same command resumes from its last checkpoint in {args.checkpoint_dir}, if one was saved"
    return "run it again to start afresh (--checkpoint-dir DIR keeps progress to resume from)"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="train a routing LoRA adapter")
    parser.add_argument(
        "--dataset", required=True, help="labelled conversations (docs/evaluation.md: the dataset format)"
    )
    parser.add_argument("--base-model", required=True, help="a Hugging Face model id or a local folder")
    parser.add_argument("--revision", help="the base model's commit (a hub id); recorded in the manifest")
    parser.add_argument("--out", required=True, help="folder for the adapter, adapter.tar.gz and manifest.json")
    parser.add_argument(
        "--force", action="store_true", help="replace the adapter --out holds (once the new one is trained)"
    )
    add_training_options(parser)
    parser.add_argument(
        "--checkpoint-dir",
        help="save the training state here every --checkpoint-every steps, and resume from it when it holds "
        "one (a spot job interrupted and restarted: SageMaker syncs /opt/ml/checkpoints with S3)",
    )
    parser.add_argument("--checkpoint-every", type=positive_int, default=50, help="steps between checkpoints")
    parser.add_argument(
        "--archive", action=argparse.BooleanOptionalAction, default=True,
        help="also write adapter.tar.gz (SageMaker's adapter artifact); a training job's output is archived by SageMaker",
    )
    return parser
