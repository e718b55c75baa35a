"""``python -c`` and the REPL get a ZenML source root (cas_store.zenml_scheme's fallback).

ZenML (0.98.0) loads every stack component's flavor, its own default orchestrator's
included, from a source that needs a source root, and finds none in ``python -c``
outside a ``zenml init`` directory: ``Client().active_stack``, and every
``artifact.load()``, raised "Unable to determine source root". The fallback makes the
working directory the source root there, and changes nothing where ZenML found one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.zenml import zenml_environ

PRINT_ROOT = "from zenml.utils import source_utils; print('ROOT', source_utils.get_source_root())"


def _python(args: list[str], cwd: Path, config: Path, **extra: str) -> str:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=zenml_environ(config, HOME=str(config.parent), **extra),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result.stdout


def _root(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("ROOT ")).split(" ", 1)[1]


def test_python_c_outside_a_repository_loads_the_active_stack(tmp_path: Path) -> None:
    work = tmp_path / "anywhere"
    work.mkdir()
    code = "from zenml.client import Client; print('STACK', Client().active_stack.orchestrator.flavor); "
    out = _python(["-c", code + PRINT_ROOT], work, tmp_path / "config")
    assert "STACK local" in out
    assert _root(out) == str(work)


def test_a_repository_a_script_and_a_custom_root_still_decide(tmp_path: Path) -> None:
    config = tmp_path / "config"
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    subprocess.run(
        [str(Path(sys.executable).with_name("zenml")), "init"],
        cwd=repo,
        env=zenml_environ(config, HOME=str(tmp_path)),
        capture_output=True,
        timeout=180,
        check=True,
    )
    assert _root(_python(["-c", PRINT_ROOT], repo / "sub", config)) == str(repo)  # the .zen repository

    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "show_root.py").write_text(PRINT_ROOT + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert _root(_python([str(scripts / "show_root.py")], elsewhere, config)) == str(scripts)  # the script's

    custom = tmp_path / "custom"
    custom.mkdir()
    out = _python(["-c", PRINT_ROOT], elsewhere, config, ZENML_CUSTOM_SOURCE_ROOT=str(custom))
    assert _root(out) == str(custom)
