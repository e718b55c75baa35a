"""Shared by every test: nothing the developer has configured for AWS or ZenML reaches a test.

The S3 server fixtures are in ``integration/conftest.py``, so only tests below
``integration/`` can start moto or SeaweedFS.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.env import isolated_aws_env
from tests.support.zenml import isolate_zenml

# Now, when pytest loads this file, before it imports any test module (some import zenml,
# whose global configuration is read once per process).
isolate_zenml()


@pytest.fixture(scope="session", autouse=True)
def _isolated_aws() -> Iterator[None]:
    """Never read the developer's ~/.aws, AWS_PROFILE or proxy settings."""
    with isolated_aws_env():
        yield
