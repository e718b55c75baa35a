"""Helpers for the ZenML flavor tests: an isolated ZenML environment and stack components
built without a ZenML database.

Importing this module isolates ZenML in this process *before* ZenML is imported (its
global configuration is a singleton read at first use): a private ``ZENML_CONFIG_PATH``,
analytics off, no inherited ``ZENML_*`` settings (a developer's ``ZENML_STORE_URL`` must
not send test runs to their server). Test modules import it first.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from s3servers import isolated_aws_environ

_ZENML_CONFIG_DIR = tempfile.mkdtemp(prefix="cas-zenml-tests-")
atexit.register(shutil.rmtree, _ZENML_CONFIG_DIR, True)


def zenml_environ(
    config_path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    **extra: str,
) -> dict[str, str]:
    """``environ`` (default ``os.environ``) isolated from the developer's AWS and ZenML setup.

    No ``ZENML_*`` variables survive except the ones set here; ``~/.aws`` is ignored (see
    :func:`s3servers.isolated_aws_environ`); analytics are off, so nothing but the loopback
    S3 server is contacted.
    """
    env = isolated_aws_environ(environ)
    for name in [n for n in env if n.startswith("ZENML_")]:
        del env[name]
    env["ZENML_CONFIG_PATH"] = str(config_path)
    env["ZENML_ANALYTICS_OPT_IN"] = "false"
    env["ZENML_ENABLE_REPO_INIT_WARNINGS"] = "false"
    env.update(extra)
    return env


if "zenml" in sys.modules:  # pragma: no cover - depends on test ordering
    raise RuntimeError("tests/zenml_helpers.py must be imported before zenml")
os.environ.clear()
os.environ.update(zenml_environ(_ZENML_CONFIG_DIR, dict(os.environ)))


def make_component(cls: type[Any], config: Any, flavor: str, **kwargs: Any) -> Any:
    """A stack component built directly, without a ZenML database (as in the field notes)."""
    from zenml.enums import StackComponentType

    return cls(
        name=f"{flavor}-{uuid.uuid4().hex[:6]}",
        id=uuid.uuid4(),
        config=config,
        flavor=flavor,
        type=StackComponentType.ARTIFACT_STORE,
        user=None,
        created=datetime.now(),
        updated=datetime.now(),
        **kwargs,
    )


def bucket_objects(client: Any, bucket: str, prefix: str = "") -> dict[str, int]:
    """``{key: size}`` of every object under ``prefix``."""
    out: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj["Size"]
    return out


def files_containing(root: Path, needle: bytes) -> list[Path]:
    """Files below ``root`` whose bytes contain ``needle``."""
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]
