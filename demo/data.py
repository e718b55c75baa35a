"""The demo's data: realistic pipeline outputs that do not change between runs.

A feature table (pandas DataFrame, stored as Parquet through pyarrow), an embedding matrix
(a numpy array of tens of MiB) and a dict of statistics. They are generated from a fixed
seed, so a second run writes byte-identical artifacts to new paths, which is exactly what
ZenML does when a pipeline re-runs on unchanged data. The benchmark pipeline
(``bench/pipeline_app.py``) produces the same data with a seed of its own. No ZenML here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

SEED = 42


def make_data(embedding_mib: int = 48, seed: int = SEED) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """``(features, embeddings, stats)``: 100,000 rows, ``embedding_mib`` MiB of float32."""
    rng = np.random.default_rng(seed)
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
