"""Teach ZenML that ``s3cas://`` paths are remote: the ``zenml.init_hooks`` entry point.

ZenML (checked on 0.98.0) treats every path whose scheme is missing from
``zenml.constants.REMOTE_FS_PREFIX`` as a local file path: an artifact store's bounds
check then resolves ``s3cas://bucket/x`` against the working directory and rejects it.
:func:`register_scheme` appends ``s3cas://`` to that list. It runs

* from ``import zenml`` itself, through this package's ``zenml.init_hooks`` entry point
  (ZenML loads and calls every hook of that group first thing in ``zenml/__init__.py``),
  so the scheme is known before any ZenML code looks at a path; and
* when :mod:`cas_store.zenml` is imported (belt and braces, e.g. when the package's entry
  points are not installed).

This module must stay tiny and must not import ZenML at module level: the hook runs
while ``zenml/__init__.py`` is still executing. It never raises, because an exception in
an init hook would break ``import zenml`` for everyone who has cas_store installed;
``tests/integration/test_zenml_store.py`` fails instead if ZenML changes this mechanism.
"""

import logging

SCHEME = "s3cas://"

log = logging.getLogger(__name__)


def register_scheme() -> bool:
    """Add ``s3cas://`` to ZenML's remote prefixes (idempotent). True if it is there now."""
    try:
        from zenml import constants

        prefixes = constants.REMOTE_FS_PREFIX
        if SCHEME not in prefixes:
            prefixes.append(SCHEME)  # in place: zenml.utils.io_utils holds the same list
        return True
    except Exception as exc:  # never break `import zenml`
        log.warning("cas_store could not register %s with ZenML: %r", SCHEME, exc)
        return False
