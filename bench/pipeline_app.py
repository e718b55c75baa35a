"""A real two-step ZenML pipeline, run by the benchmark suite in child processes.

    python pipeline_app.py setup CONFIG.json
    python pipeline_app.py run CONFIG.json STACK OUT.json

``bench.suite`` copies this file into an empty working directory and runs it from there
(ZenML resolves step sources relative to it, and a stray ``.zen/`` elsewhere would change
the active stack), with ``ZENML_CONFIG_PATH`` pointing at a private, throw-away ZenML
configuration. ``setup`` registers the s3cas flavor, a ZenML secret with the S3 keys and
one artifact store plus stack per entry of ``CONFIG["stacks"]``; ``run`` activates one
stack, runs the pipeline once and writes wall time and S3 requests to OUT.json.

Requests are counted at the client: every HTTP request botocore or aiobotocore sends
(``Endpoint._send``, i.e. each attempt, retries included) to the configured endpoint, from
any thread of the process (ZenML writes step logs from a background thread). The hooks
are installed before ZenML, s3fs or cas_store create a client.

The pipeline: ``produce`` makes a feature table (pandas, Parquet), an embedding matrix
(numpy, ``CONFIG["embedding_mib"]`` MiB) and a dict, all from a fixed seed (the demo's
data, ``demo.data.make_data``, importable through ``PYTHONPATH``), so a rerun writes
byte-identical artifacts (to new paths, as ZenML always does); ``train`` reads them back
from the artifact store. ZenML step caching is off.
"""

# No `from __future__ import annotations`: ZenML reads step outputs from evaluated annotations.
import json
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

import aiobotocore.endpoint
import botocore.endpoint

# -- client-side request counting (installed before any client exists) -----------------------

_COUNTING = {"endpoint": ""}  # requests to this URL prefix are counted
_REQUESTS: list[tuple[str, str, str, int]] = []  # method, path, query, body bytes
_LOCK = threading.Lock()


def _note(request: Any) -> None:
    endpoint = _COUNTING["endpoint"]
    if not endpoint or not str(request.url).startswith(endpoint):
        return
    headers = request.headers
    length = headers.get("X-Amz-Decoded-Content-Length") or headers.get("Content-Length") or 0
    parts = urlsplit(str(request.url))
    with _LOCK:
        _REQUESTS.append((str(request.method).upper(), unquote(parts.path), parts.query, int(length)))


_sync_send = botocore.endpoint.Endpoint._send
_async_send = aiobotocore.endpoint.AioEndpoint._send


def _counting_send(self: Any, request: Any) -> Any:
    _note(request)
    return _sync_send(self, request)


async def _counting_async_send(self: Any, request: Any) -> Any:
    _note(request)
    return await _async_send(self, request)


botocore.endpoint.Endpoint._send = _counting_send  # type: ignore[method-assign]
aiobotocore.endpoint.AioEndpoint._send = _counting_async_send  # type: ignore[method-assign]

# -- the pipeline ----------------------------------------------------------------------------

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from zenml import pipeline, step  # noqa: E402

from demo.data import make_data  # noqa: E402

SEED = 20261127


@step
def produce(
    embedding_mib: int = 16,
) -> tuple[
    Annotated[pd.DataFrame, "features"],
    Annotated[np.ndarray, "embeddings"],
    Annotated[dict, "stats"],  # type: ignore[type-arg]
]:
    features, embeddings, stats = make_data(embedding_mib, seed=SEED)
    return features, embeddings, stats  # a tuple literal: ZenML parses the return statement


@step
def train(features: pd.DataFrame, embeddings: np.ndarray, stats: dict) -> Annotated[float, "score"]:  # type: ignore[type-arg]
    return float(features["spend"].mean() + float(embeddings.mean()) + stats["rows"])


@pipeline(enable_cache=False)
def bench_pipeline(embedding_mib: int = 16) -> None:
    features, embeddings, stats = produce(embedding_mib=embedding_mib)
    train(features, embeddings, stats)


# -- commands --------------------------------------------------------------------------------


def setup(config: dict[str, Any]) -> None:
    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    client.create_flavor(
        source="cas_store.zenml.S3CASArtifactStoreFlavor",
        component_type=StackComponentType.ARTIFACT_STORE,
    )
    client.create_secret(
        "bench-s3",
        {"aws_access_key_id": config["access_key"], "aws_secret_access_key": config["secret_key"]},
    )
    for stack in config["stacks"]:
        configuration: dict[str, Any] = {
            "path": stack["path"],
            "authentication_secret": "bench-s3",
            "client_kwargs": {"endpoint_url": config["endpoint"]},
        }
        if stack["flavor"] == "s3cas":
            configuration["cache_dir"] = stack["cache_dir"]
        client.create_stack_component(
            name=stack["name"],
            flavor=stack["flavor"],
            component_type=StackComponentType.ARTIFACT_STORE,
            configuration=configuration,
        )
        client.create_stack(
            name=stack["name"],
            components={
                StackComponentType.ARTIFACT_STORE: stack["name"],
                StackComponentType.ORCHESTRATOR: "default",
            },
        )


def run(config: dict[str, Any], stack_name: str, out: Path) -> None:
    from zenml.client import Client

    client = Client()
    client.activate_stack(stack_name)
    store = client.active_stack.artifact_store
    endpoint = (store.config.client_kwargs or {}).get("endpoint_url")
    if endpoint != config["endpoint"]:  # ZenML rewrites loopback inside containers
        raise RuntimeError(f"artifact store endpoint is {endpoint!r}, not {config['endpoint']!r}")
    _COUNTING["endpoint"] = config["endpoint"]
    _REQUESTS.clear()

    start = time.perf_counter()
    result = bench_pipeline(embedding_mib=config["embedding_mib"])
    seconds = time.perf_counter() - start
    # Wait for ZenML's log-export thread, then stop counting: the rest is our own bookkeeping.
    time.sleep(0.2)
    with _LOCK:
        requests = list(_REQUESTS)
    _COUNTING["endpoint"] = ""

    run_ = client.get_pipeline_run(result.id)
    uris = {name: versions[0].uri for name, versions in run_.steps["produce"].outputs.items()}
    by_method: dict[str, int] = {}
    for method, *_ in requests:
        by_method[method] = by_method.get(method, 0) + 1
    blobs = f"/{config['bucket']}/{stack_prefix(store.config.path)}/blobs/"
    record = {
        "stack": stack_name,
        "artifact_store": type(store).__name__,
        "status": str(run_.status),
        "seconds": seconds,
        "uris": uris,
        "requests": len(requests),
        "requests_by_method": by_method,
        "upload_bytes": sum(n for m, _, _, n in requests if m in ("PUT", "POST")),
        "blob_upload_bytes": sum(
            n for m, path, _, n in requests if m in ("PUT", "POST") and path.startswith(blobs)
        ),
        "request_lines": [f"{m} {p}{'?' + q if q else ''} {n}" for m, p, q, n in requests],
    }
    out.write_text(json.dumps(record, indent=1))


def stack_prefix(path: str) -> str:
    """``s3cas://bucket/a/b`` -> ``a/b``."""
    return path.split("://", 1)[1].split("/", 1)[1] if "/" in path.split("://", 1)[1] else ""


if __name__ == "__main__":
    command, config_path, *rest = sys.argv[1:]
    cfg = json.loads(Path(config_path).read_text())
    if command == "setup":
        setup(cfg)
    elif command == "run":
        run(cfg, rest[0], Path(rest[1]))
    else:
        raise SystemExit(f"unknown command {command!r}")
