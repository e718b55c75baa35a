"""A real local ZenML server (``zenml login --local``) for tests, and a client of its REST API.

:class:`LocalZenMLServer` runs ``zenml login --local`` in a subprocess with an isolated
environment (see :func:`tests.support.zenml.zenml_environ`): ZenML then starts its local
daemon (uvicorn serving the ZenML API and the dashboard) on ``127.0.0.1`` and a free port,
on the SQLite database of that environment's ``ZENML_CONFIG_PATH``, and points the
environment's client configuration at it. The daemon detaches from the CLI and inherits its
environment. :meth:`LocalZenMLServer.stop` runs ``zenml logout --local`` and, should the
daemon outlive that, kills it by the process id ZenML recorded when it started it.

:class:`DashboardSession` talks to the server as the dashboard does: it logs in as the
local server's ``default`` user (``POST /api/v1/login``, empty password), keeps the session
cookie and sends the CSRF token with every request. Importing this module does not import
zenml.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import requests

from tests.support.env import LOOPBACK
from tests.support.ports import free_ports

__all__ = ["DashboardSession", "LocalZenMLServer", "ZenMLServerError"]

#: The local server's user (created with an empty password; the daemon runs with NO_AUTH).
DEFAULT_USER = "default"


class ZenMLServerError(RuntimeError):
    """``zenml login --local`` failed, or the server did not answer."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process took the id
        return False
    # A zombie (not yet reaped by its parent) counts as gone.
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


class LocalZenMLServer:
    """``zenml login --local`` / ``zenml logout --local`` in the environment ``env``.

    ``env`` must carry the isolated ``ZENML_CONFIG_PATH`` (the daemon's files live below
    it, in ``zen_server/daemon``); commands run in ``cwd``. Every command is time-bound.
    """

    def __init__(self, env: Mapping[str, str], cwd: Path, *, port: int | None = None) -> None:
        self.env = {**env, "ZENML_AUTO_OPEN_DASHBOARD": "false"}  # never start a browser
        self.cwd = cwd
        self.port = port if port is not None else free_ports(1)[0]
        self.config_path = Path(self.env["ZENML_CONFIG_PATH"])
        self.pid: int | None = None
        #: The outputs of the CLI commands, and the server's log once it is stopped.
        self.outputs: list[str] = []
        self.log = ""

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def daemon_dir(self) -> Path:
        return self.config_path / "zen_server" / "daemon"

    def zenml(self, *args: str, timeout: float = 120) -> str:
        """Run the ZenML CLI of this interpreter's environment; returns stdout + stderr."""
        result = subprocess.run(
            [str(Path(sys.executable).with_name("zenml")), *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output = result.stdout + result.stderr
        self.outputs.append(output)
        if result.returncode != 0:
            raise ZenMLServerError(f"zenml {' '.join(args)} failed:\n{output[-4000:]}")
        return output

    def _read_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.daemon_dir / "service.pid").read_text().strip())
        return None

    def read_log(self) -> str:
        """The daemon's log so far (ZenML removes it on logout; :meth:`stop` keeps a copy)."""
        with contextlib.suppress(OSError):
            self.log = (self.daemon_dir / "service.log").read_text(errors="replace")
        return self.log

    def start(self, timeout: float = 180) -> None:
        """``zenml login --local`` on 127.0.0.1:``port``; returns once the server answers."""
        try:
            self.zenml(
                "login", "--local", "--ip-address", LOOPBACK, "--port", str(self.port), timeout=timeout
            )
        except ZenMLServerError as exc:
            raise ZenMLServerError(f"{exc}\nserver log:\n{self.read_log()[-3000:]}") from None
        finally:
            self.pid = self._read_pid()  # also after a failure: stop() must find the daemon
        with requests.Session() as http:
            http.trust_env = False  # no proxy: loopback only
            health = http.get(f"{self.url}/health", timeout=10)
        if health.status_code != 200:
            raise ZenMLServerError(f"{self.url}/health answered {health.status_code}")

    def stop(self, timeout: float = 60) -> None:
        """``zenml logout --local``, then make sure the daemon is gone (SIGKILL by its pid)."""
        self.pid = self.pid or self._read_pid()
        self.read_log()
        try:
            if self.pid is not None or self.daemon_dir.exists():
                self.zenml("logout", "--local", timeout=timeout)
        finally:
            if self.pid is not None:
                deadline = time.monotonic() + 15
                while _alive(self.pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if _alive(self.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self.pid is not None and _alive(self.pid)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class DashboardSession:
    """A client of the server's REST API, authenticated as the dashboard is (cookie + CSRF)."""

    def __init__(self, url: str, *, timeout: float = 60) -> None:
        self.url = url
        self.timeout = timeout
        self.http = requests.Session()
        self.http.trust_env = False  # no proxy, no ~/.netrc: loopback only
        login = self.http.post(
            f"{url}/api/v1/login",
            data={"username": DEFAULT_USER, "password": ""},
            timeout=timeout,
        )
        if login.status_code != 200:
            raise ZenMLServerError(f"login failed: {login.status_code} {login.text[:500]}")
        token = login.json()
        #: The login's answer: access_token (also set as the session cookie), csrf_token, ...
        self.token: dict[str, Any] = token
        if token.get("csrf_token"):
            self.http.headers["X-CSRF-Token"] = token["csrf_token"]

    def get(self, route: str, params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None) -> Any:
        """``GET /api/v1{route}``, which must answer 200; returns the JSON body."""
        response = self.request(route, params)
        if response.status_code != 200:
            raise ZenMLServerError(f"GET {route}: {response.status_code} {response.text[:2000]}")
        return response.json()

    def request(
        self, route: str, params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None
    ) -> requests.Response:
        """``GET /api/v1{route}``, whatever it answers."""
        return self.http.get(f"{self.url}/api/v1{route}", params=params, timeout=self.timeout)

    def close(self) -> None:
        self.http.close()
