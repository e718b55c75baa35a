"""A small ZenML pipeline, run in subprocesses by ``test_zenml_pipeline.py``.

ZenML's client and global configuration are process-wide singletons, so every phase runs
in a fresh process, with ``ZENML_CONFIG_PATH``, the AWS environment and the cas_store
cache directory set by the test. The test copies this file into an empty working
directory and runs it from there (a stray ``.zen/`` elsewhere would change the stack).

    python zenml_pipeline_app.py run OUT.json
    python zenml_pipeline_app.py load OUT.json RUN.json [RUN.json ...]
"""

# No `from __future__ import annotations`: ZenML reads the step's output names from the
# evaluated return annotation.
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from zenml import pipeline, step

LARGE_BYTES = 64 * 2**20 + 4096  # above the 64 MiB the test asks for, not a round part count
LOG_MARKER = "cas-e2e-step-log-marker"
OUTPUTS = ("frame", "matrix", "summary", "large")


def make_outputs() -> tuple[pd.DataFrame, np.ndarray, dict[str, Any], np.ndarray]:
    """Deterministic outputs: a second run produces byte-identical artifacts."""
    rng = np.random.default_rng(20261127)
    n = 50_000
    frame = pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "score": rng.random(n),
            "label": [f"class-{i % 17}" for i in range(n)],
        }
    )
    matrix = rng.random((256, 512))  # 1 MiB of float64
    summary = {"rows": n, "labels": 17, "name": "é-e2e", "nested": {"values": [1, 2, 3]}}
    large = rng.integers(0, 256, LARGE_BYTES, dtype=np.uint8)  # incompressible
    return frame, matrix, summary, large


@step
def produce() -> tuple[
    Annotated[pd.DataFrame, "frame"],
    Annotated[np.ndarray, "matrix"],
    Annotated[dict, "summary"],  # type: ignore[type-arg]
    Annotated[np.ndarray, "large"],
]:
    print(LOG_MARKER)  # captured by ZenML's step logging (a background thread writes it)
    frame, matrix, summary, large = make_outputs()
    return frame, matrix, summary, large  # a tuple literal: ZenML parses the return statement


@pipeline(enable_cache=False)
def e2e_pipeline() -> None:
    produce()


def run(out: Path) -> None:
    start = time.perf_counter()
    result = e2e_pipeline()
    seconds = time.perf_counter() - start
    from zenml.client import Client

    run_ = Client().get_pipeline_run(result.id)
    outputs = run_.steps["produce"].outputs
    record = {
        "run_id": str(result.id),
        "status": str(run_.status),
        "seconds": seconds,
        "artifacts": {name: str(outputs[name][0].id) for name in OUTPUTS},
        "uris": {name: outputs[name][0].uri for name in OUTPUTS},
        "artifact_store": type(Client().active_stack.artifact_store).__name__,
    }
    out.write_text(json.dumps(record, indent=1))


def load(out: Path, run_files: list[Path]) -> None:
    from zenml.client import Client
    from zenml.log_stores.artifact.artifact_log_store import fetch_log_records

    frame, matrix, summary, large = make_outputs()
    client = Client()
    store = client.active_stack.artifact_store
    result: dict[str, Any] = {"equal": {}, "logs": {}, "savings": {}}
    start = time.perf_counter()
    for run_file in run_files:
        record = json.loads(run_file.read_text())
        run_id = record["run_id"]
        loaded = {name: client.get_artifact_version(aid).load() for name, aid in record["artifacts"].items()}
        checks = {
            "frame": isinstance(loaded["frame"], pd.DataFrame) and loaded["frame"].equals(frame),
            "matrix": np.array_equal(loaded["matrix"], matrix) and loaded["matrix"].dtype == matrix.dtype,
            "summary": loaded["summary"] == summary,
            "large": np.array_equal(loaded["large"], large),
        }
        for name, ok in checks.items():
            result["equal"][f"{run_id}/{name}"] = bool(ok)
        step_run = client.get_pipeline_run(run_id).steps["produce"]
        messages = [
            entry.message
            for logs in step_run.log_collection or []
            if logs.uri
            for entry in fetch_log_records(store, logs.uri, 10_000)
        ]
        result["logs"][run_id] = any(LOG_MARKER in m for m in messages)
        result["savings"][run_id] = [m for m in messages if m.startswith("cas_store: ")]  # log_writes
    result["seconds"] = time.perf_counter() - start
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    command, target, *rest = sys.argv[1:]
    if command == "run":
        run(Path(target))
    elif command == "load":
        load(Path(target), [Path(p) for p in rest])
    else:
        raise SystemExit(f"unknown command {command!r}")
