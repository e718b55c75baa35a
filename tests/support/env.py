"""Isolation from the developer's AWS setup, and the loopback address.

:func:`~tests.support.clients.boto3_client` and :func:`~tests.support.clients.make_bucket`
use a botocore session that ignores ``~/.aws`` and ``AWS_PROFILE`` and get explicit keys,
region and endpoint. Clients built elsewhere (s3fs, the code under test) still read the
environment, so a ``conftest.py`` should apply :func:`isolated_aws_environ` /
:func:`isolated_aws_env` (``AWS_CONFIG_FILE`` and ``AWS_SHARED_CREDENTIALS_FILE`` set to
``os.devnull``, profile/credential/endpoint variables removed, loopback added to
``NO_PROXY``) before any client is created, and pass keys explicitly anyway.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

__all__ = [
    "DUMMY_ACCESS_KEY",
    "DUMMY_SECRET_KEY",
    "LOOPBACK",
    "REGION",
    "isolated_aws_env",
    "isolated_aws_environ",
]

LOOPBACK = "127.0.0.1"
REGION = "us-east-1"
#: moto's dummy keys: the isolated environment's and :class:`~tests.support.moto.MotoServer`'s.
DUMMY_ACCESS_KEY = "testing"
DUMMY_SECRET_KEY = "testing"

#: Variables that would make a client pick up someone's real AWS identity or endpoint.
_AWS_VARS_TO_REMOVE: tuple[str, ...] = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_S3_US_EAST_1_REGIONAL_ENDPOINT",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
)


def _with_loopback(no_proxy: str) -> str:
    entries = [e.strip() for e in no_proxy.split(",") if e.strip()]
    for host in (LOOPBACK, "localhost"):
        if host not in entries:
            entries.append(host)
    return ",".join(entries)


def isolated_aws_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return a copy of ``environ`` (default ``os.environ``) that cannot reach real AWS.

    ``~/.aws`` is replaced by ``os.devnull``, profile/role/endpoint variables are dropped,
    the keys are moto's dummy ``testing``/``testing`` (so code that does not pass keys
    still works against moto and can never sign with real ones), the region is
    ``us-east-1``, the EC2 metadata probe is disabled and loopback is added to
    ``NO_PROXY``/``no_proxy`` (an ``http_proxy`` would otherwise receive requests meant
    for 127.0.0.1).
    """
    env = dict(os.environ if environ is None else environ)
    for name in _AWS_VARS_TO_REMOVE:
        env.pop(name, None)
    env["AWS_ACCESS_KEY_ID"] = DUMMY_ACCESS_KEY
    env["AWS_SECRET_ACCESS_KEY"] = DUMMY_SECRET_KEY
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["AWS_DEFAULT_REGION"] = REGION
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    no_proxy = _with_loopback(env.get("NO_PROXY", env.get("no_proxy", "")))
    env["NO_PROXY"] = no_proxy
    env["no_proxy"] = no_proxy
    return env


@contextlib.contextmanager
def isolated_aws_env() -> Iterator[None]:
    """Apply :func:`isolated_aws_environ` to ``os.environ`` and restore it on exit.

    Meant for a session-scoped fixture; clients created inside keep whatever they read.
    """
    saved = dict(os.environ)
    new = isolated_aws_environ(saved)
    try:
        os.environ.clear()
        os.environ.update(new)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
