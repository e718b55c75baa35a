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

It also installs :func:`install_source_root_fallback`: without it, ``python -c
"...Client().get_artifact_version(...).load()"`` fails outside a ``zenml init`` directory.

This module must stay tiny and must not import ZenML at module level: the hook runs
while ``zenml/__init__.py`` is still executing. It never raises, because an exception in
an init hook would break ``import zenml`` for everyone who has cas_store installed;
``tests/integration/test_zenml_store.py`` fails instead if ZenML changes this mechanism.
"""

import importlib.abc
import logging
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec, PathFinder
from types import ModuleType
from typing import Any

SCHEME = "s3cas://"
SOURCE_UTILS = "zenml.utils.source_utils"

log = logging.getLogger(__name__)


def register_scheme() -> bool:
    """Add ``s3cas://`` to ZenML's remote prefixes (idempotent). True if it is there now."""
    install_source_root_fallback()
    try:
        from zenml import constants

        prefixes = constants.REMOTE_FS_PREFIX
        if SCHEME not in prefixes:
            prefixes.append(SCHEME)  # in place: zenml.utils.io_utils holds the same list
        return True
    except Exception as exc:  # never break `import zenml`
        log.warning("cas_store could not register %s with ZenML: %r", SCHEME, exc)
        return False


def install_source_root_fallback() -> None:
    """Give ZenML a source root in ``python -c``, ``python -`` and the REPL (idempotent).

    ZenML (0.98.0) loads the flavor of every stack component -- its own built-in flavors
    as much as ``cas_store.zenml.S3CASArtifactStoreFlavor`` -- from a bare import path,
    a source of *unknown* type, and for those it first computes the source root: the
    custom root (``ZENML_CUSTOM_SOURCE_ROOT``), else the ``.zen`` repository above the
    working directory, else the directory of ``__main__.__file__``. ``python -c`` has no
    ``__main__.__file__``, so ``Client().active_stack``, and with it every
    ``artifact.load()``, raised "Unable to determine source root" outside a
    ``zenml init`` directory, although the flavor imports from anywhere. Python itself
    imports from the working directory there (``sys.path[0] == ""``), so that becomes
    the last fallback; notebooks keep ZenML's own rule (run ``zenml init``).

    ``zenml.utils.source_utils`` is patched once it is imported (it must not be imported
    from the init hook: ZenML imports ``zenml.models`` before ``zenml.config``).
    """
    try:
        module = sys.modules.get(SOURCE_UTILS)
        if module is not None:
            _patch_source_utils(module)
        elif not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
            sys.meta_path.insert(0, _PatchOnImport())
    except Exception as exc:  # never break `import zenml`
        log.warning("cas_store could not install its ZenML source root fallback: %r", exc)


def _patch_source_utils(source_utils: ModuleType) -> None:
    original = source_utils.get_implicit_source_root
    if getattr(original, "_cas_store_fallback", False):
        return

    def get_implicit_source_root() -> str:
        main = sys.modules.get("__main__")
        if (
            main is not None
            and not getattr(main, "__file__", None)
            and not source_utils.Environment.in_notebook()
        ):
            return os.getcwd()
        return str(original())

    get_implicit_source_root._cas_store_fallback = True  # type: ignore[attr-defined]
    get_implicit_source_root.__doc__ = original.__doc__
    setattr(source_utils, "get_implicit_source_root", get_implicit_source_root)  # noqa: B010


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches ``zenml.utils.source_utils`` right after ZenML imports it (once)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != SOURCE_UTILS:
            return None
        sys.meta_path.remove(self)  # one shot
        spec = PathFinder.find_spec(fullname, path, target)  # ZenML's own file, as Python would
        if spec is None:
            return None
        loader: Any = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            try:
                _patch_source_utils(module)
            except Exception as exc:  # never break `import zenml`
                log.warning("cas_store could not install its ZenML source root fallback: %r", exc)

        loader.exec_module = exec_and_patch
        return spec
