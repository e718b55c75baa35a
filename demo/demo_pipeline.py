"""The demo's pipeline: a training-like pipeline whose outputs do not change between runs.

``make_dataset`` produces a feature table, an embedding matrix and a dict of statistics
(:func:`demo.data.make_data`, from a fixed seed); ``train`` reads them back, as a training
step would.

Imported by run_demo.py after it has isolated the environment (ZenML reads its global
configuration on first use). No ``from __future__ import annotations``: ZenML reads step
outputs from the evaluated annotations.
"""

from typing import Annotated, Any

import numpy as np
import pandas as pd
from zenml import pipeline, step

from demo.data import make_data


@step
def make_dataset(
    embedding_mib: int = 48,
) -> tuple[
    Annotated[pd.DataFrame, "features"],
    Annotated[np.ndarray, "embeddings"],
    Annotated[dict[str, Any], "stats"],
]:
    features, embeddings, stats = make_data(embedding_mib)
    return features, embeddings, stats  # a tuple literal: ZenML parses the return statement


@step
def train(features: pd.DataFrame, embeddings: np.ndarray, stats: dict[str, Any]) -> Annotated[float, "score"]:
    # Reads every input back from the artifact store (through the local cache).
    return float(features["spend"].mean() + embeddings[:100].mean() + stats["rows"])


@pipeline(enable_cache=False)  # ZenML step caching off: every run writes all outputs again
def demo_pipeline(embedding_mib: int = 48) -> None:
    features, embeddings, stats = make_dataset(embedding_mib=embedding_mib)
    train(features, embeddings, stats)
