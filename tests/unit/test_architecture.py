"""The import contract: handlers -> wiring -> services -> ports <- adapters, and that it can fail.

The contract itself is import-linter's layers contract in pyproject.toml (``make test`` runs
``lint-imports``). These tests run the same check on a copy of the package with a wrong import
planted in it, so a contract that silently stopped checking anything would fail here.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = next(parent for parent in Path(__file__).resolve().parents if (parent / "pyproject.toml").exists())
PACKAGE = ROOT / "layers" / "sendwell" / "sendwell"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the project's contract, on the ``sendwell`` package under ``package_parent``."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )


def planted_copy(tmp_path: Path, module: str, line: str) -> Path:
    copy = tmp_path / "sendwell"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy.joinpath(*module.split(".")[1:]).with_suffix(".py")
    if not target.exists():
        target = target.with_suffix("") / "__init__.py"
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    return tmp_path


def test_the_package_keeps_the_contract() -> None:
    result = lint_imports(PACKAGE.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken_import"),
    [
        # A service reaching for an adapter instead of a port.
        (
            "sendwell.services.dispatch",
            "import sendwell.adapters.aws",
            "sendwell.services.dispatch -> sendwell.adapters.aws",
        ),
        # An adapter reaching for a service (what adapters/oauth.py used to do).
        (
            "sendwell.adapters.oauth",
            "from sendwell.services import reconnect",
            "sendwell.adapters.oauth -> sendwell.services",
        ),
        # A port reaching up.
        ("sendwell.ports.platform", "import sendwell.wiring", "sendwell.ports.platform -> sendwell.wiring"),
        # The models reaching for a port.
        ("sendwell.models", "import sendwell.ports.messages", "sendwell.models -> sendwell.ports.messages"),
    ],
)
def test_the_contract_breaks_on_a_planted_wrong_import(
    tmp_path: Path, module: str, line: str, broken_import: str
) -> None:
    result = lint_imports(planted_copy(tmp_path, module, line))
    assert result.returncode != 0
    assert "0 kept, 1 broken" in result.stdout
    assert broken_import in " ".join(result.stdout.split())


def adapter_imports(path: Path) -> list[str]:
    """The ``sendwell.adapters`` imports of a handler module: handlers get adapters from the wiring."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        found += [f"{path.name}:{node.lineno} imports {name}" for name in names if name.startswith("sendwell.adapters")]
    return found


def test_handlers_take_adapters_from_the_wiring_only() -> None:
    handlers = sorted((ROOT / "functions").glob("*/*.py"))
    assert len(handlers) >= 7
    assert [problem for path in handlers for problem in adapter_imports(path)] == []


def test_the_handler_check_finds_a_planted_adapter_import(tmp_path: Path) -> None:
    planted = tmp_path / "planted_app.py"
    planted.write_text("from sendwell.adapters.aws import SqsQueue\nimport sendwell.adapters.once\n", encoding="utf-8")
    assert adapter_imports(planted) == [
        "planted_app.py:1 imports sendwell.adapters.aws",
        "planted_app.py:2 imports sendwell.adapters.once",
    ]
