"""The Lambda functions' bundle, built for the runtime whatever Python runs the build.

    python -m infra.bundle              build build/lambda (what `make bundle` runs)
    python -m infra.bundle lock         re-resolve lambda-requirements.lock (needs CPython 3.13)

Standard library only: `make bundle` runs it with the set-up's interpreter (any CPython from 3.11 on)
and it runs again, for the bytecode, under the runtime's own interpreter.

- The runtime's interpreter is `LAMBDA_PYTHON` if set, else a `python3.13` on PATH that runs (a pyenv
  shim of a version not selected does not), else pyenv's newest 3.13 (`pyenv root`/versions/3.13.*).
- pip runs under that interpreter when there is one: pip evaluates environment markers against the
  interpreter running it, whatever `--python-version` says. Either way the set it installed must be
  `lambda-requirements.lock`, the set resolved for the runtime: a difference is an error, not a bundle.
- Bytecode is the runtime interpreter's (a .pyc is specific to one CPython minor version): Lambda's
  /var/task is read-only, so uncompiled modules are compiled again on every cold start (~2 s instead of
  ~0.8 s: benchmarks/footprint.py). Without that interpreter the bundle ships sources, says so, and records it in
  `build/lambda-bundle.json`; a stage with provisioned concurrency refuses such a bundle at synth
  unless TASKROUTER_ALLOW_SOURCE_BUNDLE=1 (infra/lambda_code.py).
"""

from __future__ import annotations

import compileall
import glob
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLE_DIR = ROOT / "build" / "lambda"
BUNDLE_INFO = ROOT / "build" / "lambda-bundle.json"  # beside the asset, not in it: its hash stays the code's
LOCK_FILE = ROOT / "lambda-requirements.lock"
RUNTIME_VERSION = "3.13"  # the functions' runtime, python3.13 (Amazon Linux 2023, supported until 2029-06-30)
LAMBDA_PLATFORM = "manylinux2014_aarch64"  # arm64 functions' wheels
PROVIDED_BY_THE_RUNTIME = {"boto3"}  # Lambda's Python runtimes ship boto3 (and botocore)
# The tools that never run in a function: local mode, the client and its command line, evaluation,
# data generation, review, training and the preflight.
OFF_LAMBDA = ("local", "client.py", "cli.py", "evaluation", "datagen", "review", "training", "repository.py", "extras.py", "arguments.py", "doctor", "model_server")
_PIP = ["-m", "pip", "--disable-pip-version-check"]
_PIP_INSTALL = [*_PIP, "install", "--quiet", "--root-user-action=ignore"]


class BundleError(Exception):
    """The bundle cannot be built as asked; the message says what to do."""


def runtime_requirements(*, with_runtime_provided: bool = False) -> list[str]:
    """The project's runtime dependencies (pyproject.toml), less what Lambda's runtime provides."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [req for req in declared if with_runtime_provided or req.split("==")[0] not in PROVIDED_BY_THE_RUNTIME]


def _version_of(python: str) -> str | None:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _pyenv_root() -> Path | None:
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return None
    done = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
    return Path(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else None


def find_runtime_python(environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """The interpreter of the runtime's version, where this machine has one (module docstring)."""
    explicit = environ.get("LAMBDA_PYTHON")
    if explicit:
        if _version_of(explicit) != RUNTIME_VERSION:
            raise BundleError(f"LAMBDA_PYTHON={explicit} is not a CPython {RUNTIME_VERSION} that runs")
        return explicit
    candidates = [shutil.which(f"python{RUNTIME_VERSION}")]
    root = _pyenv_root()
    if root is not None:
        found = glob.glob(str(root / "versions" / f"{RUNTIME_VERSION}.*" / "bin" / f"python{RUNTIME_VERSION}"))
        candidates += sorted(found, key=_release, reverse=True)
    for candidate in filter(None, candidates):
        if _version_of(candidate) == RUNTIME_VERSION:
            return candidate
    return None


def _release(path: str) -> tuple[int, ...]:
    match = re.search(rf"/{re.escape(RUNTIME_VERSION)}\.(\d+)/", path)
    return (int(match.group(1)),) if match else (-1,)


def read_lock(path: Path = LOCK_FILE) -> dict[str, str]:
    """Normalized name -> version of a lock's `name==version` lines."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[_normalized(name)] = version
    return pins


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(target: Path) -> dict[str, str]:
    """Normalized name -> version of the distributions installed in `target`."""
    found = {}
    for metadata in target.glob("*.dist-info/METADATA"):
        fields = dict(
            line.split(": ", 1) for line in metadata.read_text(encoding="utf-8").splitlines()[:20] if ": " in line
        )
        found[_normalized(fields["Name"])] = fields["Version"]
    return found


def _pip_install(python: str, target: Path, platform: str, requirements: list[str]) -> None:
    subprocess.run(
        [python, *_PIP_INSTALL, "--no-compile", "--only-binary=:all:", "--platform", platform,
         "--implementation", "cp", "--python-version", RUNTIME_VERSION, "--target", str(target),
         "-c", str(ROOT / "requirements.lock"), *requirements],
        check=True,
    )


def build_bundle(
    target: Path = BUNDLE_DIR, *, platform: str = LAMBDA_PLATFORM, with_runtime_provided: bool = False,
    runtime_python: str | None = None, bytecode: bool = True,
) -> bool:
    """Rebuild `target` from scratch; True when it holds bytecode. `runtime_python` defaults to the one
    found; another `platform`, with what the runtime provides added, makes a replica of the bundle this
    machine can import, to measure or test it (`bytecode` False: as built without CPython 3.13)."""
    python = runtime_python or find_runtime_python()
    shutil.rmtree(target, ignore_errors=True)
    requirements = runtime_requirements()
    _pip_install(python or sys.executable, target, platform, requirements)
    wanted, got = read_lock(), installed(target)
    if got != wanted:
        differs = sorted(f"{name} {got.get(name, '-')} (lock: {wanted.get(name, '-')})" for name in set(got) | set(wanted)
                         if got.get(name) != wanted.get(name))
        raise BundleError(
            f"the bundle's dependencies differ from {LOCK_FILE.name}, resolved for python{RUNTIME_VERSION}: "
            f"{', '.join(differs)}. After a change of pyproject.toml run `python -m infra.bundle lock` "
            f"with CPython {RUNTIME_VERSION}; otherwise build with it (LAMBDA_PYTHON)"
        )
    if with_runtime_provided:
        _pip_install(python or sys.executable, target, platform, sorted(set(runtime_requirements(with_runtime_provided=True)) - set(requirements)))
    shutil.rmtree(target / "bin", ignore_errors=True)  # console scripts: unused in Lambda
    shutil.copytree(
        ROOT / "lambdas" / "taskrouter",
        target / "taskrouter",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", *OFF_LAMBDA),
    )
    if not bytecode:
        return False
    if python is None:
        print(
            f"make bundle: no CPython {RUNTIME_VERSION} found (LAMBDA_PYTHON, python{RUNTIME_VERSION} on PATH, "
            f"pyenv): the bundle ships sources, and each cold start compiles them (~2 s instead of ~0.8 s). "
            f"A stage with provisioned concurrency refuses it: install CPython {RUNTIME_VERSION} (README).",
            file=sys.stderr,
        )
        return False
    subprocess.run([python, "-I", str(Path(__file__).resolve()), "compile", str(target)], check=True)
    return True


def compile_bundle(bundle: Path) -> None:
    """Hash-based bytecode never checked against its source: no mtime in it (the asset hash stays the
    same from build to build) and no stat of each source at import. Dependencies ship bytecode alone,
    in place of their sources (which keeps the package under 10 MB); the router's own package keeps
    its sources beside its bytecode, for readable tracebacks. Run by the runtime's interpreter."""
    if "%d.%d" % sys.version_info[:2] != RUNTIME_VERSION:
        raise BundleError(f"bytecode for python{RUNTIME_VERSION} must be compiled by CPython {RUNTIME_VERSION}")
    unchecked = py_compile.PycInvalidationMode.UNCHECKED_HASH
    ok = compileall.compile_dir(bundle / "taskrouter", quiet=1, workers=0, invalidation_mode=unchecked)
    for path in bundle.iterdir():
        if path.name == "taskrouter" or path.name.endswith(".dist-info"):
            continue
        if path.is_dir():
            ok &= compileall.compile_dir(path, quiet=1, workers=0, legacy=True, invalidation_mode=unchecked)
            sources = list(path.rglob("*.py"))
        elif path.suffix == ".py":
            ok &= bool(py_compile.compile(str(path), cfile=f"{path}c", invalidation_mode=unchecked))
            sources = [path]
        else:
            continue
        for source in sources:
            source.unlink()
    if not ok:
        raise BundleError("compiling the bundle's bytecode failed")


def lock() -> None:
    """Resolve the runtime dependencies under CPython 3.13 for the Lambda platform: lambda-requirements.lock."""
    python = find_runtime_python()
    if python is None:
        raise BundleError(f"resolving the lock needs CPython {RUNTIME_VERSION}: set LAMBDA_PYTHON or install it")
    report = ROOT / "build" / "lambda-resolution.json"
    report.parent.mkdir(exist_ok=True)
    subprocess.run(
        [python, *_PIP_INSTALL, "--dry-run", "--ignore-installed", "--report", str(report),
         "--only-binary=:all:", "--platform", LAMBDA_PLATFORM, "--implementation", "cp", "--python-version",
         RUNTIME_VERSION, "--target", str(ROOT / "build" / "lambda-resolution"), "-c", str(ROOT / "requirements.lock"),
         *runtime_requirements()],
        check=True,
    )
    resolved = sorted(
        (_normalized(item["metadata"]["name"]), item["metadata"]["version"]) for item in json.loads(report.read_text())["install"]
    )
    LOCK_FILE.write_text(
        f"# The Lambda bundle's dependencies, resolved for python{RUNTIME_VERSION} on {LAMBDA_PLATFORM} by\n"
        "# `python -m infra.bundle lock` (pip under CPython 3.13). `make bundle` refuses a set that differs.\n"
        + "".join(f"{name}=={version}\n" for name, version in resolved)
    )


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["compile"]:
            compile_bundle(Path(argv[1]))
        elif argv[:1] == ["lock"]:
            lock()
        else:
            bytecode = build_bundle()
            BUNDLE_INFO.write_text(json.dumps({"runtime": f"python{RUNTIME_VERSION}", "bytecode": bytecode}) + "\n")
    except BundleError as error:
        print(f"make bundle: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
