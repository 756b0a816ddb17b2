"""Reusable wrk driver: start a real ``quartstack serve``, warm up, measure targets.

Every target is measured in the same run against the same server process, and
reported as a ratio against the first target, because absolute numbers drift
between runs on shared machines (see bench/README.md).

Command line (from the repository root; needs ``wrk``: ``apt-get install -y wrk``):

    .venv/bin/python -m bench.wrkbench [--env KEY=VALUE ...] [--duration 10]
        [--connections 32] [--threads 1] [--warmup 2]
        --target health GET /health/
        --target publish POST '/examples/messaging/publish?queue_name=b' bench/publish.lua

A target is ``NAME METHOD PATH [LUA_SCRIPT]``; PATH may also be a full URL (to
measure another server in the same run). A non-GET target without a script gets
a generated one that sets the method and, with ``--body``, a JSON body.

From Python::

    from bench.wrkbench import BenchServer, Target, measure, format_table
    with BenchServer({"REDIS_HOST": "127.0.0.1"}) as server:
        rows = measure(server.url, [Target("health", "GET", "/health/")], duration=10)
    print(format_table(rows))
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
P95_SCRIPT = Path(__file__).with_name("p95.lua")
#: ``quartstack serve --server`` choices; hypercorn is the default everywhere.
SERVERS = ("hypercorn", "uvicorn")

#: Environment every benchmarked server gets unless the caller overrides it:
#: rate limiting would turn most of a run into 429s.
DEFAULT_SERVER_ENV = {"RATE_LIMIT_ENABLED": "false"}

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass(frozen=True)
class Target:
    """One thing to measure: ``path`` relative to the server URL, or a full URL."""

    name: str
    method: str = "GET"
    path: str = "/"
    script: Path | None = None
    body: str | None = None
    #: Server process whose CPU time to charge to this target (default: measure()'s).
    pid: int | None = None

    def url(self, base_url: str) -> str:
        return self.path if "://" in self.path else base_url.rstrip("/") + self.path


@dataclass
class WrkResult:
    requests: int
    requests_per_second: float
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50, p75, p90, p99
    non_2xx: int = 0
    socket_errors: int = 0
    #: Server CPU time (user + system) per request, when the server's pid is known.
    #: Steadier than req/s on a shared machine: other load steals wall time, not CPU.
    cpu_us_per_request: float | None = None

    @property
    def p50(self) -> float:
        return self.latency_ms.get("p50", float("nan"))

    @property
    def p95(self) -> float:
        return self.latency_ms.get("p95", float("nan"))

    @property
    def p99(self) -> float:
        return self.latency_ms.get("p99", float("nan"))


def parse_wrk(output: str) -> WrkResult:
    """Pull requests, req/s, latency percentiles and errors out of ``wrk --latency``."""
    requests = re.search(r"(\d+) requests in", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if requests is None or rps is None:
        raise RuntimeError(f"cannot parse wrk output:\n{output}")
    latency: dict[str, float] = {}
    for match in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE):
        latency[f"p{match.group(1)}"] = float(match.group(2)) * _UNITS_MS[match.group(3)]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        requests=int(requests.group(1)),
        requests_per_second=float(rps.group(1)),
        latency_ms=latency,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


def median_result(results: Sequence[WrkResult]) -> WrkResult:
    """One row for several rounds of the same target: median throughput and CPU per
    request, the latencies of the median round, summed counts."""
    ordered = sorted(results, key=lambda r: r.requests_per_second)
    middle = ordered[len(ordered) // 2]
    cpu = [r.cpu_us_per_request for r in results if r.cpu_us_per_request]
    return WrkResult(
        requests=sum(r.requests for r in results),
        requests_per_second=statistics.median(r.requests_per_second for r in results),
        latency_ms=middle.latency_ms,
        non_2xx=sum(r.non_2xx for r in results),
        socket_errors=sum(r.socket_errors for r in results),
        cpu_us_per_request=statistics.median(cpu) if cpu else None,
    )


def _generated_script(target: Target, directory: Path) -> Path:
    lines = [f'wrk.method = "{target.method.upper()}"']
    if target.body is not None:
        lines.append('wrk.headers["Content-Type"] = "application/json"')
        lines.append(f"wrk.body = [==[{target.body}]==]")
    path = directory / f"{re.sub(r'[^A-Za-z0-9_-]', '_', target.name)}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live descendants so far (Linux
    /proc): a server with worker processes is charged for all of them."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        total += int(fields[11]) + int(fields[12])
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pending += [int(child) for child in children.read_text().split()]
    return total / ticks


def with_p95(script: Path | None, directory: Path) -> Path:
    """``script`` with a ``done`` hook that prints p95 in wrk's percentile format
    (``wrk --latency`` prints 50/75/90/99 only), unless it reports on its own."""
    if script is None:
        return P95_SCRIPT
    text = script.read_text()
    if "done = function" in text or "function done" in text:
        return script
    combined = directory / f"p95-{script.name}"
    combined.write_text(text + "\n" + P95_SCRIPT.read_text())
    return combined


def run_wrk(
    url: str,
    *,
    duration: float,
    connections: int = 32,
    threads: int = 1,
    script: Path | None = None,
    env: dict[str, str] | None = None,
) -> WrkResult:
    """Run wrk once and parse its report."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{max(connections, threads)}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
    ]
    with tempfile.TemporaryDirectory(prefix="wrk-p95-") as tmp:
        command += ["-s", str(with_p95(script, Path(tmp)))]
        completed = subprocess.run(
            [*command, url],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
        )
    return parse_wrk(completed.stdout)


def measure(
    base_url: str,
    targets: Sequence[Target],
    *,
    duration: float = 10,
    connections: int = 32,
    threads: int = 1,
    warmup: float = 2,
    server_pid: int | None = None,
) -> list[tuple[Target, WrkResult]]:
    """Warm every target up, then measure each in turn (the first is the baseline).

    With ``server_pid`` (or a target's own ``pid``) the server's CPU time per
    request is measured too.
    """
    rows = []
    with tempfile.TemporaryDirectory(prefix="wrkbench-") as tmp:
        scripts = {
            t.name: t.script
            if t.script is not None
            else (_generated_script(t, Path(tmp)) if t.method.upper() != "GET" or t.body else None)
            for t in targets
        }
        if warmup > 0:
            for target in targets:
                run_wrk(
                    target.url(base_url),
                    duration=warmup,
                    connections=connections,
                    threads=threads,
                    script=scripts[target.name],
                )
        for target in targets:
            pid = target.pid or server_pid
            cpu_before = process_cpu_seconds(pid) if pid else 0.0
            result = run_wrk(
                target.url(base_url),
                duration=duration,
                connections=connections,
                threads=threads,
                script=scripts[target.name],
            )
            if pid and result.requests:
                cpu = process_cpu_seconds(pid) - cpu_before
                result.cpu_us_per_request = cpu / result.requests * 1e6
            rows.append((target, result))
    return rows


def rotate_on_odd_rounds(round_number: int, targets: Sequence[Target]) -> list[Target]:
    """Every other round the first target goes last (bench/database.py's order)."""
    return list(targets) if round_number % 2 == 0 else [*targets[1:], targets[0]]


def reverse_on_odd_rounds(round_number: int, targets: Sequence[Target]) -> list[Target]:
    """Every other round in reverse: pairs stay adjacent, each pair's order swaps."""
    return list(targets) if round_number % 2 == 0 else list(targets)[::-1]


def alternating_rounds(
    base_url: str,
    targets: Sequence[Target],
    *,
    rounds: int,
    duration: float = 10,
    connections: int = 32,
    warmup: float = 2,
    server_pid: int | None = None,
    order: Callable[[int, Sequence[Target]], Sequence[Target]] | None = rotate_on_odd_rounds,
    after_round: Callable[[int, dict[str, WrkResult]], None] | None = None,
) -> tuple[dict[str, list[WrkResult]], list[dict[str, WrkResult]]]:
    """``rounds`` rounds of :func:`measure` over ``targets`` (warm-up before the first
    only), each round in the order ``order(round_number, targets)`` gives (``None``: the
    same order every round), so slow drift on the machine favours no target.

    Returns every target's results by name, one per round (for :func:`median_result`),
    and each round's results by target name (for per-round ratios: targets measured
    back to back are the fair comparison when other work comes and goes).
    ``after_round(round_number, by_name)`` runs after each round (progress, resets).
    """
    runs: dict[str, list[WrkResult]] = {t.name: [] for t in targets}
    per_round: list[dict[str, WrkResult]] = []
    for round_number in range(rounds):
        rows = measure(
            base_url,
            targets if order is None else order(round_number, targets),
            duration=duration,
            connections=connections,
            warmup=warmup if round_number == 0 else 0,
            server_pid=server_pid,
        )
        by_name = {target.name: result for target, result in rows}
        for name, result in by_name.items():
            runs[name].append(result)
        per_round.append(by_name)
        if after_round is not None:
            after_round(round_number, by_name)
    return runs, per_round


def format_table(rows: Sequence[tuple[Target, WrkResult]]) -> str:
    """A fixed-width table; ratios are against the first row."""
    if not rows:
        return "(no targets)"
    base = rows[0][1]
    with_cpu = all(r.cpu_us_per_request for _, r in rows)
    header = (
        f"{'target':<24} {'req/s':>9} {'ratio':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'p99 ratio':>9} {'non-2xx':>8} {'sock err':>8}"
    )
    if with_cpu:
        header += f" {'cpu us/req':>10} {'cpu ratio':>9}"
    lines = [header]
    for target, result in rows:
        ratio = result.requests_per_second / base.requests_per_second
        p99_ratio = result.p99 / base.p99 if base.p99 else float("nan")
        line = (
            f"{target.name:<24} {result.requests_per_second:>9.0f} {ratio:>6.2f} "
            f"{result.p50:>8.2f} {result.p95:>8.2f} {result.p99:>8.2f} {p99_ratio:>9.2f} "
            f"{result.non_2xx:>8} {result.socket_errors:>8}"
        )
        if with_cpu:
            # base CPU / this CPU: the throughput ratio if both were CPU-bound alone
            cpu_ratio = (base.cpu_us_per_request or 0) / (result.cpu_us_per_request or 1)
            line += f" {result.cpu_us_per_request:>10.0f} {cpu_ratio:>9.2f}"
        lines.append(line)
    return "\n".join(lines)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class BenchServer:
    """A server process on a free loopback port, stderr to a file (not a pipe: a
    reader thread in this process would compete with the server for CPU).

    Default command: ``python -m quartstack serve --bind 127.0.0.1:PORT``. Pass
    ``command`` (with ``{bind}`` in it) to run something else, e.g. bench/bare_app.py.
    """

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        command: Sequence[str] | None = None,
        ready_path: str = "/health/startup",
        port: int | None = None,
        server: str = "hypercorn",
    ) -> None:
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = server
        extra_env, extra_args = server_choice(server)
        self.env = {**os.environ, **DEFAULT_SERVER_ENV, **extra_env, **(env or {})}
        self.command = list(
            command
            or [sys.executable, "-m", "quartstack", "serve", "--bind", "{bind}", *extra_args]
        )
        self.ready_path = ready_path
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    def start(self, timeout: float = 60.0) -> BenchServer:
        bind = f"127.0.0.1:{self.port}"
        handle, name = tempfile.mkstemp(prefix="wrkbench-server-", suffix=".log")
        self.log_path = Path(name)
        with os.fdopen(handle, "wb") as log:
            self.process = subprocess.Popen(
                [part.replace("{bind}", bind) for part in self.command],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(self.url + self.ready_path, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"{self.ready_path} not 200 after {timeout} s:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("server not started")
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
        return self.process.returncode

    def __enter__(self) -> BenchServer:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


def server_choice(server: str) -> tuple[dict[str, str], list[str]]:
    """Environment and ``quartstack serve`` arguments that pick ``server``. Nothing for
    Hypercorn (the default), so these benches also run on a build without ``--server``."""
    if server not in SERVERS:
        raise ValueError(f"unknown server {server!r}; one of {', '.join(SERVERS)}")
    if server == "hypercorn":
        return {}, []
    return {"SERVER": server}, ["--server", server]


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--server`` and ``--json``: what bench/all.py passes to every bench."""
    parser.add_argument("--server", choices=SERVERS, default="hypercorn", help="HTTP server")
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the results here (bench/all.py)"
    )


def result_row(
    name: str, result: WrkResult, baseline: WrkResult | None = None
) -> dict[str, object]:
    """One table row as JSON: throughput, latency, server CPU per request, failures."""
    row: dict[str, object] = {
        "target": name,
        "rps": round(result.requests_per_second, 1),
        "p50_ms": _finite(result.p50),
        "p95_ms": _finite(result.p95),
        "p99_ms": _finite(result.p99),
        "cpu_us": None if result.cpu_us_per_request is None else round(result.cpu_us_per_request),
        "non_2xx": result.non_2xx,
        "socket_errors": result.socket_errors,
    }
    if baseline is not None and baseline.requests_per_second:
        row["ratio"] = round(result.requests_per_second / baseline.requests_per_second, 3)
    return row


def goal_entry(
    name: str, value: float, goal: float, rounds: Sequence[float] = (), *, at_most: bool = False
) -> dict[str, object]:
    """A goal for the JSON: ratios must reach ``goal``; with ``at_most`` (a latency
    SLO) ``value`` must stay below it."""
    met = value < goal if at_most else value >= goal
    return {
        "name": name,
        "value": _finite(value),
        "goal": goal,
        "at_most": at_most,
        "met": bool(met) and value == value,
        "rounds": [round(r, 3) for r in rounds],
    }


def _finite(value: float) -> float | None:
    return None if value != value else round(value, 2)  # NaN -> null


def write_json(
    path: Path | None,
    bench: str,
    server: str | None,
    rows: Sequence[dict[str, object]],
    *,
    goals: Sequence[dict[str, object]] = (),
    settings: str = "",
) -> None:
    """Write one bench's results for bench/all.py (nothing without ``--json``).

    ``server`` is None for a bench that runs both servers itself (bench/servers.py):
    its rows then say which server each is from (``"server"``).

    ``goals``: ``{"name", "value", "goal", "met", "rounds"}`` (a ratio's median and the
    per-round values it came from, or a p95 against the SLO)."""
    if path is None:
        return
    document = {
        "bench": bench,
        "server": server,
        "settings": settings,
        "machine": machine(),
        "rows": list(rows),
        "goals": list(goals),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def machine() -> str:
    """CPU model, core count and kernel: what the numbers were measured on."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores, Linux {platform.release()}"


def _parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env wants KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def _parse_target(parts: Sequence[str], body: str | None) -> Target:
    if len(parts) not in (3, 4):
        raise SystemExit(f"--target wants NAME METHOD PATH [LUA_SCRIPT], got {' '.join(parts)!r}")
    script = Path(parts[3]) if len(parts) == 4 else None
    return Target(parts[0], parts[1].upper(), parts[2], script, body if parts[1] != "GET" else None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--duration", type=float, default=10, help="seconds per target")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1 fits 2 cores)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds per target, unmeasured")
    parser.add_argument("--body", help="JSON body for non-GET targets without a script")
    parser.add_argument(
        "--target",
        action="append",
        nargs="+",
        required=True,
        metavar="NAME METHOD PATH [LUA]",
        help="repeatable; the first target is the baseline",
    )
    args = parser.parse_args(argv)
    targets = [_parse_target(parts, args.body) for parts in args.target]
    with BenchServer(_parse_env(args.env)) as server:
        rows = measure(
            server.url,
            targets,
            duration=args.duration,
            connections=args.connections,
            threads=args.threads,
            warmup=args.warmup,
            server_pid=server.pid,
        )
    print(
        f"wrk: {args.duration:g} s per target, {args.connections} connections, "
        f"{args.threads} thread(s), loopback; ratios against {targets[0].name!r}"
    )
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
