"""MongoDB for tests: an ``nx-27017`` process, and a SCRAM front that adds authentication.

No mongod can be installed on these machines; ``nx-27017`` speaks MongoDB's wire
protocol but has no authentication. :class:`ScramFront` sits in front of it and
answers the SCRAM-SHA-256 conversation itself (MongoDB's ``saslStart`` /
``saslContinue`` commands, its error 18 "AuthenticationFailed" on a wrong
password, error 13 for commands on a connection that has not authenticated), and
forwards every other message unchanged. So PyMongo's real SCRAM client runs
against a server whose password a test can change, as on a real MongoDB, and the
front can count the authenticated (pool) connections from the server side.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bson
from pymongo.saslprep import saslprep

from tests.support.net import TcpProxy, free_port, wait_for_port

_OP_MSG = 2013
_ITERATIONS = 4096
#: Commands MongoDB answers before authentication (the handshake and its monitors).
_HELLO = {"hello", "isMaster", "ismaster"}
_OPEN_COMMANDS = {"hello", "ismaster", "isMaster", "ping", "buildInfo", "buildinfo", "endSessions"}


class NxMongoServer:
    """An ``nx-27017`` process (in-memory databases) on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="qs-nx-"))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> NxMongoServer:
        executable = Path(sys.executable).with_name("nx-27017")
        self.process = subprocess.Popen(
            [
                str(executable),
                "--data-dir",
                "memory",
                "--host",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--log-file",
                str(self.dir / "log"),
                "--pid-file",
                str(self.dir / "pid"),
            ],
            cwd=self.dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, timeout=20)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> NxMongoServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


@dataclass
class _Conversation:
    """SCRAM state of one client connection."""

    authenticated: bool = False
    user: str = ""
    client_first_bare: bytes = b""
    server_first: bytes = b""
    nonce: bytes = b""
    salt: bytes = field(default_factory=lambda: os.urandom(16))


class ScramFront(TcpProxy):
    """A MongoDB-protocol proxy that requires SCRAM-SHA-256 login as ``user``."""

    def __init__(self, target_port: int, user: str, password: str) -> None:
        super().__init__(target_port)
        self.user = user
        self.password = password
        self.authenticated_now = 0
        self.authenticated_peak = 0
        self.failed_logins = 0
        self._request_ids = itertools.count(1_000_000)

    def set_password(self, password: str) -> None:
        """Change the user's password; connections already logged in stay so (as in MongoDB)."""
        self.password = password

    def reset_counts(self) -> None:
        self.authenticated_peak = self.authenticated_now
        self.failed_logins = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        state = _Conversation()
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
            self._writers.add(up_writer)
            await asyncio.gather(
                self._from_client(reader, writer, up_writer, state),
                self._pipe(up_reader, writer, delayed=False),
                return_exceptions=True,
            )
        except OSError:
            pass
        finally:
            if state.authenticated:
                self.authenticated_now -= 1
            writer.transport.abort()

    async def _from_client(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: asyncio.StreamWriter,
        state: _Conversation,
    ) -> None:
        try:
            while True:
                header = await reader.readexactly(16)
                body = await reader.readexactly(int.from_bytes(header[:4], "little") - 16)
                command = _op_msg_command(header, body)
                reply = None if command is None else self._answer(command, state)
                if reply is None:
                    upstream.write(header + body)
                    await upstream.drain()
                else:
                    writer.write(self._op_msg_reply(header, reply))
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            upstream.transport.abort()

    def _answer(self, command: dict[str, Any], state: _Conversation) -> dict[str, Any] | None:
        """Our reply to ``command``, or None to forward it to nx-27017."""
        name = next(iter(command))
        if name in _HELLO and "saslSupportedMechs" in command and "client" not in command:
            # PyMongo's mechanism negotiation (not a connection handshake, which carries
            # "client" metadata and goes to the server).
            return {"ok": 1.0, "isWritablePrimary": True, "saslSupportedMechs": ["SCRAM-SHA-256"]}
        if name == "saslStart":
            return self._sasl_start(command, state)
        if name == "saslContinue":
            return self._sasl_continue(command, state)
        if not state.authenticated and name not in _OPEN_COMMANDS:
            return {
                "ok": 0.0,
                "errmsg": f"command {name} requires authentication",
                "code": 13,
                "codeName": "Unauthorized",
            }
        return None

    def _sasl_start(self, command: dict[str, Any], state: _Conversation) -> dict[str, Any]:
        if command.get("mechanism") != "SCRAM-SHA-256":
            return self._failed()
        payload = bytes(command["payload"])
        state.client_first_bare = payload.split(b",", 2)[2]  # drop the gs2 header "n,,"
        fields = _scram_fields(state.client_first_bare)
        state.user = fields[b"n"].decode().replace("=2C", ",").replace("=3D", "=")
        state.nonce = fields[b"r"] + base64.b64encode(os.urandom(18))
        state.server_first = b"r=%s,s=%s,i=%d" % (
            state.nonce,
            base64.b64encode(state.salt),
            _ITERATIONS,
        )
        return {"ok": 1.0, "conversationId": 1, "done": False, "payload": state.server_first}

    def _sasl_continue(self, command: dict[str, Any], state: _Conversation) -> dict[str, Any]:
        client_final = bytes(command["payload"])
        without_proof, _, proof = client_final.rpartition(b",p=")
        if (
            state.user != self.user
            or not state.server_first
            or _scram_fields(without_proof).get(b"r") != state.nonce
        ):
            return self._failed()
        salted = hashlib.pbkdf2_hmac(
            "sha256", saslprep(self.password).encode(), state.salt, _ITERATIONS
        )
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        auth_message = b",".join((state.client_first_bare, state.server_first, without_proof))
        signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
        expected = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        if not hmac.compare_digest(base64.b64decode(proof), expected):
            return self._failed()
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        verifier = base64.b64encode(hmac.digest(server_key, auth_message, "sha256"))
        state.authenticated = True
        self.authenticated_now += 1
        self.authenticated_peak = max(self.authenticated_peak, self.authenticated_now)
        return {"ok": 1.0, "conversationId": 1, "done": True, "payload": b"v=" + verifier}

    def _failed(self) -> dict[str, Any]:
        self.failed_logins += 1
        return {
            "ok": 0.0,
            "errmsg": "Authentication failed.",
            "code": 18,
            "codeName": "AuthenticationFailed",
        }

    def _op_msg_reply(self, request_header: bytes, document: dict[str, Any]) -> bytes:
        body = (0).to_bytes(4, "little") + b"\x00" + bson.encode(document)
        header = (
            (16 + len(body)).to_bytes(4, "little")
            + next(self._request_ids).to_bytes(4, "little")
            + request_header[4:8]  # responseTo: the request's id
            + _OP_MSG.to_bytes(4, "little")
        )
        return header + body


def _op_msg_command(header: bytes, body: bytes) -> dict[str, Any] | None:
    """The command document of an OP_MSG (its kind-0 section), else None."""
    if int.from_bytes(header[12:16], "little") != _OP_MSG or body[4] != 0:
        return None
    length = int.from_bytes(body[5:9], "little")
    document: dict[str, Any] = bson.decode(body[5 : 5 + length])
    return document


def _scram_fields(message: bytes) -> dict[bytes, bytes]:
    return {
        part[:1]: part[2:] for part in message.split(b",") if len(part) > 1 and part[1:2] == b"="
    }
