"""The demo's pipeline: realistic outputs that do not change between runs.

A training-like pipeline produces a feature table (pandas DataFrame, stored as Parquet
through pyarrow), an embedding matrix (a numpy array of tens of MiB) and a dict of
statistics; a second step reads them back, as a training step would. The data is
generated from a fixed seed, so a second run writes byte-identical artifacts to new paths,
which is exactly what ZenML does when a pipeline re-runs on unchanged data.

Imported by run_demo.py after it has isolated the environment (ZenML reads its global
configuration on first use). No ``from __future__ import annotations``: ZenML reads step
outputs from the evaluated annotations.
"""

from typing import Annotated, Any

import numpy as np
import pandas as pd
from zenml import pipeline, step

SEED = 42


@step
def make_dataset(
    embedding_mib: int = 48,
) -> tuple[
    Annotated[pd.DataFrame, "features"],
    Annotated[np.ndarray, "embeddings"],
    Annotated[dict[str, Any], "stats"],
]:
    rng = np.random.default_rng(SEED)
    rows = 100_000
    features = pd.DataFrame(
        {
            "user_id": np.arange(rows, dtype=np.int64),
            "age": rng.integers(18, 90, rows),
            "spend": rng.gamma(2.0, 40.0, rows).round(2),
            "segment": rng.choice(["a", "b", "c", "d"], rows),
        }
    )
    dims = 256
    embeddings = rng.standard_normal((embedding_mib * 2**20 // (4 * dims), dims), dtype=np.float32)
    stats = {
        "rows": rows,
        "mean_spend": float(features["spend"].mean()),
        "segments": features["segment"].value_counts().sort_index().to_dict(),
        "embedding_shape": list(embeddings.shape),
    }
    return features, embeddings, stats


@step
def train(features: pd.DataFrame, embeddings: np.ndarray, stats: dict[str, Any]) -> Annotated[float, "score"]:
    # Reads every input back from the artifact store (through the local cache).
    return float(features["spend"].mean() + embeddings[:100].mean() + stats["rows"])


@pipeline(enable_cache=False)  # ZenML step caching off: every run writes all outputs again
def demo_pipeline(embedding_mib: int = 48) -> None:
    features, embeddings, stats = make_dataset(embedding_mib=embedding_mib)
    train(features, embeddings, stats)
