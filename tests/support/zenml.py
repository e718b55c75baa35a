"""An isolated ZenML environment and stack components built without a ZenML database.

ZenML must be isolated in a process *before* it is imported (its global configuration is
a singleton read at first use): :func:`isolate_zenml` gives this process a private
``ZENML_CONFIG_PATH``, analytics off and no inherited ``ZENML_*`` settings (a developer's
``ZENML_STORE_URL`` must not send test runs to their server). ``tests/conftest.py`` calls
it when pytest loads it, before any test module is imported. Importing this module has no
side effect and does not import zenml, so the benchmarks use it too.
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

from tests.support.env import isolated_aws_environ

__all__ = ["bucket_objects", "files_containing", "isolate_zenml", "make_component", "zenml_environ"]

#: The private configuration directory, once :func:`isolate_zenml` has run.
_isolated_config_dir: list[str] = []


def zenml_environ(
    config_path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    **extra: str,
) -> dict[str, str]:
    """``environ`` (default ``os.environ``) isolated from the developer's AWS and ZenML setup.

    No ``ZENML_*`` variables survive except the ones set here; ``~/.aws`` is ignored (see
    :func:`tests.support.env.isolated_aws_environ`); analytics are off, so nothing but the
    loopback S3 server is contacted.
    """
    env = isolated_aws_environ(environ)
    for name in [n for n in env if n.startswith("ZENML_")]:
        del env[name]
    env["ZENML_CONFIG_PATH"] = str(config_path)
    env["ZENML_ANALYTICS_OPT_IN"] = "false"
    env["ZENML_ENABLE_REPO_INIT_WARNINGS"] = "false"
    env.update(extra)
    return env


def isolate_zenml() -> str:
    """Apply :func:`zenml_environ` to ``os.environ``, with a private ZenML configuration
    directory (removed at exit); returns that directory.

    Must run before zenml is imported in this process (``RuntimeError`` otherwise); later
    calls only return the directory.
    """
    if not _isolated_config_dir:
        if "zenml" in sys.modules:  # pragma: no cover - depends on import ordering
            raise RuntimeError("tests.support.zenml.isolate_zenml() must run before zenml is imported")
        config_dir = tempfile.mkdtemp(prefix="cas-zenml-tests-")
        atexit.register(shutil.rmtree, config_dir, True)
        isolated = zenml_environ(config_dir, dict(os.environ))
        os.environ.clear()
        os.environ.update(isolated)
        _isolated_config_dir.append(config_dir)
    return _isolated_config_dir[0]


def make_component(cls: type[Any], config: Any, flavor: str, *, name_prefix: str = "", **kwargs: Any) -> Any:
    """An artifact-store stack component built directly, without a ZenML database (as in
    the field notes), named ``{name_prefix}{flavor}-<random>``."""
    from zenml.enums import StackComponentType

    return cls(
        name=f"{name_prefix}{flavor}-{uuid.uuid4().hex[:6]}",
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
