"""A real Redis Cluster (3 masters, 3 replicas) of ``redis-server`` processes on free ports."""

from __future__ import annotations

import ctypes
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis
from tests.support.net import wait_for_port

_BUS_OFFSET = 10000  # a cluster node also listens on port + 10000
_PR_SET_PDEATHSIG = 1


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(taken: set[int]) -> int:
    """A port whose cluster-bus port (+10000) is free and valid too."""
    while True:
        port = random.randint(20000, 50000)
        if {port, port + _BUS_OFFSET} & taken:
            continue
        if _port_free(port) and _port_free(port + _BUS_OFFSET):
            taken.update({port, port + _BUS_OFFSET})
            return port


def die_with_parent() -> None:
    """In the child before exec: receive SIGKILL when the parent process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class RedisClusterProcesses:
    def __init__(self, nodes: int = 6, replicas: int = 1, node_timeout_ms: int = 1000) -> None:
        taken: set[int] = set()
        self.ports = [free_cluster_port(taken) for _ in range(nodes)]
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.dir = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def node_list(self) -> str:
        """``REDIS_NODES`` value: ``redis-1=127.0.0.1:p1,...``."""
        return ",".join(f"redis-{i}=127.0.0.1:{p}" for i, p in enumerate(self.ports, 1))

    def start_node(self, port: int) -> None:
        """Start one node as our child (not daemonized): if the test run itself is
        killed, the kernel kills the node too (PR_SET_PDEATHSIG), so none is left over."""
        node_dir = self.dir / str(port)
        node_dir.mkdir(exist_ok=True)
        self._processes[port] = subprocess.Popen(
            [
                *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
                *(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(node_dir / "nodes.conf"),
                ),
                *("--cluster-node-timeout", str(self.node_timeout_ms)),
                *("--cluster-replica-validity-factor", "0", "--dir", str(node_dir)),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
                *("--logfile", str(node_dir / "log"), "--pidfile", str(node_dir / "pid")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        wait_for_port(port)

    def restore_node(self, port: int) -> None:
        """Start a killed node again (it rejoins as a replica) and wait until the
        cluster is whole: for a test's ``finally``, so later tests see every node."""
        if not self.alive(port):
            self.start_node(port)
        self.wait_ok()
        self.wait_replicas_linked()

    def start(self) -> RedisClusterProcesses:
        for port in self.ports:
            self.start_node(port)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in self.ports],
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_ok()
        self.wait_replicas_linked()
        return self

    def wait_replicas_linked(self, timeout: float = 30.0) -> None:
        """Until every replica has synced with its master (only then can it fail over)
        and every node lists it in CLUSTER SLOTS (Redis omits a replica there until
        gossip reports a replication offset for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [self.cli(p, "info", "replication") for p in self.ports if self.alive(p)]
            replicas = [i for i in infos if "role:slave" in i]
            if (
                len(replicas) >= len(self.ports) // 2
                and all("master_link_status:up" in i for i in replicas)
                and all(self._slots_list_replicas(p) for p in self.ports if self.alive(p))
            ):
                return
            time.sleep(0.2)
        raise TimeoutError("replicas did not link to their masters")

    def _slots_list_replicas(self, port: int) -> bool:
        client = redis.Redis(port=port, socket_timeout=5)
        client.set_response_callback("CLUSTER SLOTS", lambda response, **_: response)
        try:
            slots = client.execute_command("CLUSTER SLOTS")
        except redis.RedisError:
            return False
        finally:
            client.close()
        return bool(slots) and all(len(entry) >= 3 + self.replicas for entry in slots)

    def cli(self, port: int, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout

    def wait_ok(self, timeout: float = 30.0, port: int | None = None) -> None:
        deadline = time.monotonic() + timeout
        ports = [port] if port else [p for p in self.ports if self.alive(p)]
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in self.cli(p, "cluster", "info") for p in ports):
                return
            time.sleep(0.2)
        raise TimeoutError("cluster_state did not become ok")

    def masters(self) -> list[int]:
        ports = []
        for port in self.ports:
            if self.alive(port) and "role:master" in self.cli(port, "info", "replication"):
                ports.append(port)
        return ports

    def pid(self, port: int) -> int | None:
        process = self._processes.get(port)
        return process.pid if process is not None and process.poll() is None else None

    def alive(self, port: int) -> bool:
        return self.pid(port) is not None

    def kill(self, port: int) -> None:
        """SIGKILL the node (as a crash would) and reap it."""
        process = self._processes.pop(port, None)
        if process is not None:
            process.kill()
            process.wait()
            (self.dir / str(port) / "pid").unlink(missing_ok=True)

    def stop(self) -> None:
        for port in self.ports:
            self.kill(port)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisClusterProcesses:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()
