"""docs/configuration.md holds every environment variable the package reads, and only those (issue 12):
the variables are found in the source, so that a new one cannot go undocumented."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskrouter.adapters.settings import RuntimeSettings

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lambdas" / "taskrouter"
DOC = ROOT / "docs" / "configuration.md"

_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|PORT")
# A string that is exactly a variable of these families is a variable, wherever it stands (a dict of
# defaults, a helper's argument): the names of the code's own settings and of the libraries it drives.
_FAMILIES = re.compile(r"(?:TASKROUTER|OPENAI|AWS|POWERTOOLS|SAGEMAKER)_[A-Z0-9_]+")
_ENVIRONMENTS = {"os.environ", "environ", "env"}  # how the source names an environment mapping

# Documented though no code of the package reads them: libraries read them for it.
THIRD_PARTY = {
    "AWS_PROFILE": "botocore picks the profile of the tools that call AWS (ops, launch, --stage)",
    "POWERTOOLS_LOG_LEVEL": "Powertools' Logger sets the functions' log level from it",
}


def _python_files() -> Iterator[Path]:
    yield from (path for path in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in path.parts)


def _string(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _reads_environment(call: ast.Call) -> bool:
    func = call.func
    return isinstance(func, ast.Attribute) and (
        ast.unparse(func) == "os.getenv"
        or (func.attr in {"get", "setdefault", "pop"} and ast.unparse(func.value) in _ENVIRONMENTS)
    )


def _helpers(tree: ast.AST) -> set[str]:
    """The module's functions that read the variable named by their first parameter
    (`def _integer(name, ...): ... os.environ.get(name)`)."""
    helpers = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.args.args:
            first = node.args.args[0].arg
            if any(
                isinstance(call, ast.Call) and _reads_environment(call) and call.args
                and isinstance(call.args[0], ast.Name) and call.args[0].id == first
                for call in ast.walk(node)
            ):  # fmt: skip
                helpers.add(node.name)
    return helpers


def _read_in(tree: ast.AST) -> set[str]:
    """Names read through os.environ[...] / .get / .setdefault / .pop, os.getenv, a helper given the
    environment and a name (`_number(env, "X", ...)`) or the name alone (`_integer("PORT", ...)`), and
    strings that are exactly a variable name of the families above (outside f-strings, whose pieces are
    not names)."""
    found: set[str] = set()
    helpers = _helpers(tree)
    in_fstring = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            if _reads_environment(node):
                found.add(_string(node.args[0]) or "")
            elif isinstance(node.func, ast.Name) and node.func.id in helpers:
                found.add(_string(node.args[0]) or "")
            elif len(node.args) > 1 and ast.unparse(node.args[0]) in _ENVIRONMENTS:
                found.add(_string(node.args[1]) or "")
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in _ENVIRONMENTS:
            found.add(_string(node.slice) or "")
        elif (text := _string(node)) is not None and id(node) not in in_fstring and _FAMILIES.fullmatch(text):
            found.add(text)
    return {name for name in found if _NAME.fullmatch(name)}


class _Recording(dict):
    """An environment that remembers every name asked of it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key) -> bool:
        self.asked.add(key)
        return super().__contains__(key)


def _settings_names() -> set[str]:
    """What `RuntimeSettings.from_env` asks of the environment, the per-strategy names included (they are
    built, not written out); with every backend set and unset, in AWS and not, so that no branch hides one."""
    asked: set[str] = set()
    for extra in ({}, {"TASKROUTER_SAGEMAKER_ENDPOINT": "e", "OPENAI_API_KEY": "k", "AWS_LAMBDA_FUNCTION_NAME": "f"}):
        environment = _Recording({"TASKROUTER_TABLE_NAME": "t", **extra})
        RuntimeSettings.from_env(environment)
        asked |= environment.asked
    return asked


def read_by_the_code() -> dict[str, set[str]]:
    """Each variable the package reads, with the files that read it."""
    names: dict[str, set[str]] = {}
    for path in _python_files():
        for name in _read_in(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    for name in _settings_names():
        names.setdefault(name, set()).add("lambdas/taskrouter/adapters/settings.py (RuntimeSettings.from_env)")
    return names


def documented() -> dict[str, list[str]]:
    """The table's variables (each backticked name of a row's first cell) with their row's cells."""
    text = DOC.read_text(encoding="utf-8")
    tables = [block for block in re.split(r"\n\s*\n", text) if block.lstrip().startswith("| variable |")]
    assert len(tables) == 1, "docs/configuration.md must hold one table of variables"
    rows: dict[str, list[str]] = {}
    for line in tables[0].strip().splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        for name in re.findall(r"`([^`]+)`", cells[0]):
            assert name not in rows, f"{name} has two rows"
            rows[name] = cells
    return rows


def test_the_scan_finds_what_it_should():
    """A guard on the scanner itself: variables read each way it knows."""
    names = read_by_the_code()
    for name in (
        "TASKROUTER_FALLBACK_TIMEOUT_MS_REACT",  # built from a strategy's name in settings.py
        "TASKROUTER_URL",  # environ.get in the CLI
        "PORT",  # a helper given the name
        "TASKROUTER_LOCAL_DIR",  # os.environ.get
        "TASKROUTER_FAILBACK_HOLD_S",  # module-level os.environ.get in the alarm handler
        "POWERTOOLS_METRICS_DISABLED",  # a dict of make local's defaults
    ):
        assert name in names, name
    assert not {name for name in names if name.startswith("TASKROUTER_") and name.endswith("_")}


def test_every_variable_the_code_reads_is_in_the_table():
    rows = documented()
    missing = {name: sorted(files) for name, files in read_by_the_code().items() if name not in rows}
    assert not missing, f"add these to docs/configuration.md's table (read by): {missing}"


def test_the_table_lists_no_variable_nothing_reads():
    read = read_by_the_code()
    unread = [name for name in documented() if name not in read and name not in THIRD_PARTY]
    assert not unread, f"docs/configuration.md documents variables no code reads: {unread}"
    assert not set(THIRD_PARTY) & set(read), "a whitelisted variable is read by the code now: drop it from THIRD_PARTY"


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("TASKROUTER_OPENAI_MODEL", "`gpt-4.1-mini`"),
        ("TASKROUTER_DEFAULT_STRATEGY", "`zero_shot`"),
        ("TASKROUTER_FALLBACK_TIMEOUT_MS", "`3000`"),
        ("TASKROUTER_PRIMARY_TIMEOUT_MS", "`250`"),
        ("TASKROUTER_LOCAL_DIR", "`.local/`"),
        ("PORT", "`8080`"),
    ],
)
def test_defaults_are_given(name, default):
    row = documented()[name]
    assert len(row) == 4 and all(row), row
    assert default in row[1], row


def test_every_row_has_a_default_a_reader_and_a_meaning():
    for name, row in documented().items():
        assert len(row) == 4 and all(row), (name, row)


def test_the_defaults_in_the_table_are_the_code_s():
    """The router's defaults, as the settings read them with nothing set."""
    settings = RuntimeSettings.from_env({"TASKROUTER_TABLE_NAME": "t"})
    rows = documented()
    assert f"`{settings.openai_model}`" in rows["TASKROUTER_OPENAI_MODEL"][1]
    assert f"`{settings.router.default_strategy.value}`" in rows["TASKROUTER_DEFAULT_STRATEGY"][1]
    assert f"`{settings.registry_ttl_s:g}`" in rows["TASKROUTER_REGISTRY_TTL_S"][1]
    assert f"`{settings.router.retry_after_s}`" in rows["TASKROUTER_RETRY_AFTER_S"][1]
    assert f"`{settings.breaker_failures}`" in rows["TASKROUTER_BREAKER_FAILURES"][1]
    assert f"`{settings.breaker_window_s:g}`" in rows["TASKROUTER_BREAKER_WINDOW_S"][1]
    assert f"`{settings.breaker_cooldown_s:g}`" in rows["TASKROUTER_BREAKER_COOLDOWN_S"][1]
    for strategy, budget in settings.router.strategy_budgets.items():
        suffix = "" if strategy.value == "zero_shot" else f"_{strategy.value.upper()}"
        assert f"`{budget.primary_timeout_s * 1000:g}`" in rows[f"TASKROUTER_PRIMARY_TIMEOUT_MS{suffix}"][1]
        assert f"`{budget.fallback_timeout_s * 1000:g}`" in rows[f"TASKROUTER_FALLBACK_TIMEOUT_MS{suffix}"][1]
    hedge = settings.router.strategy_budgets[next(iter(settings.router.strategy_budgets))].hedge_after_s
    assert f"`{hedge * 1000:g}`" in rows["TASKROUTER_HEDGE_AFTER_MS"][1]
