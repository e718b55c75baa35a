"""Build cas_store's wheel from the repository and install it into a fresh virtual environment.

Used by ``tests/integration/test_wheel_install.py``: the package as a user gets it from
``pip install ".[zenml]"`` or a wheel, never the editable install of the test
environment.

* :func:`copy_tracked_files` copies the files git tracks (as they are in the work tree)
  to a scratch directory, so the build's ``build/`` and ``*.egg-info`` never land in the
  repository and untracked files never land in the wheel.
* :func:`build_wheel` builds a regular (non-editable) wheel with this interpreter's
  setuptools, offline: ``pip wheel --no-deps --no-build-isolation``.
* :func:`create_venv` makes a virtual environment with ``python -m venv`` and installs a
  requirement into it under the repository's ``constraints.txt``. With ``uv`` installed
  (the ``uv`` package) the install goes through ``uv pip install`` (1-3 s for the
  ``zenml`` extra on this 2-core machine, 3 s with an empty uv cache); otherwise through
  the venv's own pip (35-55 s, warm cache or not: pip spends it unpacking and
  byte-compiling, not downloading).
* :meth:`Venv.environ` is an environment as an activated venv has it: the venv's
  ``bin`` first on ``PATH``, no ``PYTHONPATH``.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Venv", "WheelContents", "build_wheel", "copy_tracked_files", "create_venv", "find_uv"]

#: Environment variables that would let the venv's processes import something outside it
#: (the repository, the test environment) or change how the install resolves.
LEAKING_VARIABLES = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "VIRTUAL_ENV",
    "PIP_CONSTRAINT",
    "UV_CONSTRAINT",
)


def clean_environ(environ: dict[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default ``os.environ``) without :data:`LEAKING_VARIABLES`."""
    env = dict(os.environ if environ is None else environ)
    for name in LEAKING_VARIABLES:
        env.pop(name, None)
    return env


def _run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(
        args,
        cwd=cwd,
        env=clean_environ(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:5])} ... exited {result.returncode}:\n{output[-6000:]}")
    return output


def copy_tracked_files(repo: Path, dest: Path) -> list[str]:
    """Copy every file git tracks in ``repo`` (work-tree content) to ``dest``; returns them."""
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    copied = []
    for name in filter(None, listing.split("\0")):
        source = repo / name
        if not source.is_file():  # deleted in the work tree, or a submodule
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied.append(name)
    return copied


def build_wheel(source: Path, out_dir: Path) -> Path:
    """Build a regular wheel of the project in ``source`` into ``out_dir`` and return it.

    Uses this interpreter's setuptools (the ``build-system`` requirement) without build
    isolation, so nothing is downloaded; ``RuntimeError`` says what is missing.
    """
    try:
        import setuptools
    except ImportError as exc:
        raise RuntimeError(
            f"cannot build the cas_store wheel: setuptools (pyproject.toml's build-system requirement) "
            f"is not installed in {sys.prefix}: `python -m pip install 'setuptools>=69'`"
        ) from exc
    major = int(setuptools.__version__.split(".")[0])
    if major < 69:
        raise RuntimeError(f"cannot build the cas_store wheel: setuptools {setuptools.__version__} < 69")
    out_dir.mkdir(parents=True, exist_ok=True)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out_dir), "."],
        cwd=source,
    )
    wheels = sorted(out_dir.glob("cas_store-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one cas_store wheel in {out_dir}, found {[w.name for w in wheels]}")
    return wheels[0]


@dataclass
class WheelContents:
    """What a wheel holds: its file names and its ``entry_points.txt`` groups."""

    names: list[str]
    entry_points: dict[str, dict[str, str]]
    metadata: str

    @classmethod
    def read(cls, wheel: Path) -> WheelContents:
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            dist_info = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
            if len(dist_info) != 1:
                raise RuntimeError(f"{wheel.name}: expected one .dist-info directory, found {dist_info}")
            (info,) = dist_info
            metadata = archive.read(f"{info}/METADATA").decode()
            parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
            parser.optionxform = str  # type: ignore[assignment,method-assign]
            if f"{info}/entry_points.txt" in names:
                parser.read_string(archive.read(f"{info}/entry_points.txt").decode())
        entry_points = {section: dict(parser[section]) for section in parser.sections()}
        return cls(names, entry_points, metadata)


def find_uv() -> str | None:
    """The binary of the ``uv`` package, if it is installed (a test dependency), else None."""
    try:
        import uv  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return str(uv.find_uv_bin())


@dataclass
class Venv:
    """A virtual environment and how long its creation took."""

    path: Path
    installer: str  # "uv" or "pip"
    seconds: dict[str, float]
    install_output: str

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def environ(self, environ: dict[str, str] | None = None) -> dict[str, str]:
        """:func:`clean_environ` of ``environ``, activated: ``VIRTUAL_ENV`` and ``PATH``."""
        env = clean_environ(environ)
        env["VIRTUAL_ENV"] = str(self.path)
        env["PATH"] = os.pathsep.join([str(self.bin), env.get("PATH") or os.defpath])
        return env


def create_venv(path: Path, requirement: str, constraints: Path, *, cwd: Path) -> Venv:
    """``python -m venv path``, then install ``requirement`` under ``constraints`` into it.

    ``venv`` bases it on this interpreter's base installation, so it sees no package of the
    test environment. Runs in ``cwd`` with :func:`clean_environ`.
    """
    uv = find_uv()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    _run([sys.executable, "-m", "venv", *(["--without-pip"] if uv else []), str(path)], cwd=cwd)
    seconds["venv"] = time.perf_counter() - start
    python = path / "bin" / "python"
    start = time.perf_counter()
    if uv:
        # --system-certs: trust the machine's certificate store, as pip does (behind a TLS
        # proxy uv's bundled roots are not enough).
        args = [uv, "pip", "install", "--system-certs", "--python", str(python), "-c", str(constraints)]
        args.append(requirement)
    else:
        args = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-c", str(constraints)]
        args.append(requirement)
    output = _run(args, cwd=cwd)
    seconds["install"] = time.perf_counter() - start
    return Venv(path, "uv" if uv else "pip", seconds, output)
