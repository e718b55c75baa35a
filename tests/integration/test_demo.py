"""The README's demo (python -m demo.run_demo) explains itself and succeeds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support.zenml import zenml_environ

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_prints_the_explained_report(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demo.run_demo", "--embedding-mib", "8"],
        cwd=REPO,
        env=zenml_environ(
            tmp_path / "unused-zenml-config", HOME=str(tmp_path)
        ),  # the demo isolates itself too
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, (out + result.stderr)[-4000:]
    assert "ZenML step caching is off" in out
    assert "run 2 executes every step again" in out
    assert re.search(r"^run 1 \.\.\. completed in [\d.]+ s$", out, re.M)
    assert re.search(r"^run 2 \.\.\. completed in [\d.]+ s$", out, re.M)
    # Per output: its size and what each run added; the big output cost run 2 nothing.
    table = out.split("What each output added to the bucket", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"output\s+step\s+size\s+run 1 added\s+run 2 added", table)
    assert re.search(r"embeddings\s+make_dataset\s+8\.0 MiB\s+8\.0 MiB\s+0 B", table), table
    assert re.search(r"features\s+make_dataset\s+[\d.]+ KiB\s+[\d.]+ KiB\s+\d+ B", table), table
    # A load from an empty cache next to one from the cache, and the commands at the end.
    assert "$ cas-store --zenml-store cas_demo_store cache clear" in out
    assert re.search(r"load with an empty local cache \(from S3\)\s+[\d.]+ s", out)
    assert re.search(r"load again \(from the local cache\)\s+[\d.]+ s\s+\d+x faster", out)
    assert re.search(r"\$ cas-store --zenml-store cas_demo_store stats\n.*dedup ratio\s+2\.00", out, re.S)
    assert "mode              dry run: nothing changed" in out
    assert "blob reads" not in out
    assert "nothing left running" in out
