"""tox.ini's [zenml-tests] list, run at both ends of the ZenML window, holds every ZenML test."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_test_that_runs_zenml_is_in_the_zenml_tests_list() -> None:
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(REPO / "tox.ini")
    listed = set(tox["zenml-tests"]["files"].split())
    using_zenml = {
        str(path.relative_to(REPO))
        for path in (REPO / "tests" / "integration").glob("test_*.py")
        if re.search(
            r"^\s*(from|import) zenml|zenml_environ|\bzenml\b.*(login|artifact-store)", path.read_text(), re.M
        )
        or "zenml" in path.name
    }
    assert using_zenml - listed == set()
    assert all((REPO / f).is_file() for f in listed)
