"""The Prefect server of a command-line run that has none configured.

Without ``PREFECT_API_URL`` (environment or Prefect profile), Prefect would start an ephemeral
server *inside* the flow process's process group: Ctrl-C or SIGTERM to the group (a terminal,
``timeout``, DVC) stopped the server first, and the flow then retried the dead API for minutes;
after ``kill -9`` of the flow the server was left running. :func:`cli_server` starts the same
server instead — Prefect's ephemeral app (``prefect.server.api.server:create_app`` under uvicorn,
with the settings Prefect's own ``SubprocessASGIServer`` passes it) — as a child in its own
session, so signals sent to the command's group never reach it, and points the run at it. The
child dies with its parent however the parent ends: ``PR_SET_PDEATHSIG`` (Linux), and a watchdog
thread that polls the parent pid (everywhere). The command line stops it when the run ends.

The server starts while the flow module (torch, diffusers) is imported: :meth:`CliServer.ready`
waits for its health check afterwards. Prefect's ``SubprocessASGIServer`` is not subclassed:
importing its module costs the flow process several seconds it never needs once a server
runs elsewhere, and it cannot start the process in a session of its own. Its output goes to
``$PREFECT_HOME/cli-server-<pid>.log`` (removed when the run ends, kept and named in the
error when the server fails).

``python -m flows._server PARENT_PID PORT`` is the child itself (not for users).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dag_core.errors import RunInterrupted

#: what Prefect's ``SubprocessASGIServer._run_uvicorn_command`` sets for its ephemeral server
SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}
#: seconds to wait for the server's health check (Prefect's own default, 20 s, is too short
#: for a busy 2-core machine); ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` overrides it
STARTUP_TIMEOUT = 180.0
_PR_SET_PDEATHSIG = 1


class ServerFailed(RunInterrupted):
    """The run's Prefect server did not start, or went away: an environment failure (exit 1)."""


def configured_api_url() -> str | None:
    """The Prefect API URL the run would use from any Prefect settings source (environment,
    profile, ``prefect.toml``), or None. Imports Prefect's settings."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


def _remove_stale_logs(home: Path) -> None:
    """Remove the server logs of commands that ended without cleaning up (``kill -9``)."""
    for log in home.glob("cli-server-*.log"):
        pid = log.stem.rpartition("-")[2]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            log.unlink(missing_ok=True)
        except OSError:  # another user's process: leave it
            continue


class CliServer:
    """One Prefect server child process for one command-line run (see the module doc)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        home = _prefect_home()
        home.mkdir(parents=True, exist_ok=True)
        _remove_stale_logs(home)
        self.log_path = home / f"cli-server-{os.getpid()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update(SERVER_ENV)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flows._server", str(os.getpid()), str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # signals to the command's process group never reach it
        )
        self.failed = False

    def _fail(self, what: str) -> ServerFailed:
        self.failed = True
        return ServerFailed(f"the run's Prefect server {what}; see {self.log_path}")

    def ready(self, timeout: float | None = None) -> None:
        """Wait until the server answers its health check (ServerFailed if it exits or does
        not answer within ``timeout`` s)."""
        if timeout is None:
            text = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
            timeout = max(float(text), 1.0) if text else STARTUP_TIMEOUT
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise self._fail(f"exited with status {code} while starting")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise self._fail(f"did not answer within {timeout:.0f} s")
            time.sleep(0.2)

    def alive(self) -> bool:
        """Whether the server process is still running."""
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s); its log is removed unless the
        server failed. Safe to call again."""
        if self._log.closed:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        elif self.process.returncode not in (0, -signal.SIGTERM):
            self.failed = True
        self._log.close()
        if not self.failed:
            self.log_path.unlink(missing_ok=True)


@contextmanager
def cli_server() -> Iterator[CliServer | None]:
    """Start the run's own Prefect server when no API URL is configured; yield it (None when
    one is configured) with ``PREFECT_API_URL`` pointing at it for this process and its
    children. Call :meth:`CliServer.ready` before the flow runs.

    The server is stopped at interpreter exit (``atexit``), which runs after Prefect's own
    exit hook has sent the run's last logs and states to it; it dies with the process anyway.
    """
    if configured_api_url():
        yield None
        return
    server = CliServer()
    atexit.register(server.stop)
    os.environ["PREFECT_API_URL"] = server.api_url
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server
    finally:
        os.environ.pop("PREFECT_API_URL", None)


# --- the child -----------------------------------------------------------------------------


def _die_with(parent: int) -> None:
    """End this process when ``parent`` ends: PR_SET_PDEATHSIG where there is one, and a
    watchdog thread (SIGTERM, then exit 5 s later) everywhere."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent ended before the death signal was set
        os._exit(0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown
        time.sleep(5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _serve(parent: int, port: int) -> Any:
    """Run Prefect's ephemeral server app on ``port`` until ``parent`` ends (as
    ``SubprocessASGIServer._run_uvicorn_command`` starts it)."""
    _die_with(parent)
    spec = importlib.util.find_spec("prefect")
    app_dir = str(Path(spec.origin).parent.parent) if spec and spec.origin else "."
    sys.argv = [
        "uvicorn",
        "--app-dir",
        app_dir,
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    return runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
