"""Every benchmark in one command, short runs, results as JSON and a Markdown table.

Runs each bench module of bench/ as its own process (``--json`` gives its rows:
req/s, ratio against the bench's baseline, p50/p95/p99, server CPU per request)
once per server in ``--servers`` (alternating which server goes first, so slow
drift on the machine does not favour one), then writes
``bench/results/latest.json`` and ``bench/results/latest.md`` and puts the table
into the README's "## Benchmarks" section (between the ``bench:latest`` markers)
with the date and the machine. Benches that need no HTTP server (redaction, the
worker's projection lag) run once; their summary lines are kept as text. A bench
that runs both servers itself (servers: uvicorn beside Hypercorn in one run) runs once
too, and its rows go into the servers' columns.

    .venv/bin/python -m bench.all [--servers hypercorn uvicorn] [--duration 3]
        [--rounds 3] [--only web messaging ...] [--no-readme]

``tox -e bench`` runs this; ``tox -e bench -- --servers hypercorn uvicorn`` passes
options, and ``tox -e bench -- --module bench.web --rounds 5`` runs one module as
before.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.wrkbench import REPO_ROOT, SERVERS, machine

RESULTS = REPO_ROOT / "bench" / "results"
README = REPO_ROOT / "README.md"
BEGIN, END = "<!-- bench:latest:begin -->", "<!-- bench:latest:end -->"


@dataclass(frozen=True)
class Bench:
    name: str
    module: str
    #: Arguments from (duration, rounds).
    arguments: Callable[[float, int], list[str]]
    #: Runs under each server (takes --server and --json), or once with text output.
    per_server: bool = True
    #: Runs once and measures every server itself (takes --json, no --server): its rows
    #: say which server they are from and fill those servers' columns.
    side_by_side: bool = False
    what: str = ""


def _wrk_args(duration: float, rounds: int) -> list[str]:
    return ["--duration", f"{duration:g}", "--rounds", str(rounds), "--warmup", "1"]


BENCHES = (
    Bench("web", "bench.web", _wrk_args, what="full web layer vs a bare Quart app, /health/"),
    Bench("database", "bench.database", _wrk_args, what="postgres query vs /health/"),
    Bench("redis", "bench.redis", _wrk_args, what="cache read vs /health/; rate limiter's cost"),
    Bench(
        "vault",
        "bench.vault",
        lambda d, r: ["--duration", f"{d:g}", "--rounds", str(r), "--connections", "32"],
        what="secret route, KV cache warm vs off, vs /health/live",
    ),
    Bench("messaging", "bench.messaging", _wrk_args, what="publish with confirms vs /health/"),
    Bench(
        "signup",
        "bench.signup",
        lambda d, r: [*_wrk_args(d, r), "--rate", "50", "--rate-seconds", f"{max(d, 5):g}"],
        what="POST /users vs the postgres query (wrk), then both at a constant 50 req/s",
    ),
    Bench("tracing", "bench.tracing", _wrk_args, what="tracing on (100 %) vs off, postgres query"),
    Bench(
        "servers",
        "bench.servers",
        _wrk_args,
        per_server=False,
        side_by_side=True,
        what="uvicorn beside Hypercorn in one run: /health/, postgres query, cached secret",
    ),
    Bench(
        "redaction",
        "bench.redaction",
        lambda d, r: ["--number", "5000"],
        per_server=False,
        what="secret scrubbing per log line (no server)",
    ),
    Bench(
        "projection_lag",
        "bench.projection_lag",
        lambda d, r: ["--rate", "200", "--seconds", f"{d:g}", "--burst", "1000"],
        per_server=False,
        what="the worker's projection lag and drain rate (no HTTP server)",
    ),
)


def run_bench(bench: Bench, server: str | None, duration: float, rounds: int) -> dict[str, Any]:
    """One bench process; its JSON document, or an error entry with the output's tail."""
    command = [sys.executable, "-m", bench.module, *bench.arguments(duration, rounds)]
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        out = Path(tmp) / "result.json"
        if server is not None:
            command += ["--server", server]
        if server is not None or bench.side_by_side:
            command += ["--json", str(out)]
        label = bench.name + (f" on {server}" if server else "")
        print(f"== {label}: {' '.join(command[2:])}", file=sys.stderr, flush=True)
        began = time.monotonic()
        completed = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        seconds = round(time.monotonic() - began, 1)
        sys.stderr.write(completed.stdout)
        document: dict[str, Any] = {"bench": bench.name, "server": server}
        if out.exists():
            document = json.loads(out.read_text())
        document |= {"exit_code": completed.returncode, "seconds": seconds, "what": bench.what}
        if server is None or not out.exists():
            document["output"] = completed.stdout.strip().splitlines()[-12:]
        if not out.exists() and completed.returncode != 0:
            document["error"] = (completed.stderr or completed.stdout).strip().splitlines()[-8:]
        return document


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    ratio = f" ({row['ratio']:.2f})" if "ratio" in row else ""
    cpu = "-" if row.get("cpu_us") is None else f"{row['cpu_us']}"
    failed = row.get("non_2xx", 0) + row.get("socket_errors", 0)
    return (
        f"{row['rps']:.0f}{ratio} · {_ms(row['p50_ms'])}/{_ms(row['p95_ms'])}/"
        f"{_ms(row['p99_ms'])} · {cpu}" + (f" · {failed} failed" if failed else "")
    )


def _goal_cell(goal: dict[str, Any] | None) -> str:
    if goal is None or goal.get("value") is None:
        return "-"
    rounds = goal.get("rounds") or []
    spread = f" [{min(rounds):.2f}-{max(rounds):.2f}]" if len(rounds) > 1 else ""
    mark = "" if "met" not in goal else (" ✓" if goal["met"] else " ✗")
    return f"{goal['value']:.2f}{spread}{mark}"


def _side_by_side(document: dict[str, Any], server: str) -> dict[str, Any]:
    """A bench that measured every server in one run, as if it were ``server``'s run:
    the rows and goals that say they are that server's."""
    return {
        **document,
        "server": server,
        "rows": [r for r in document.get("rows", []) if r.get("server") == server],
        "goals": [g for g in document.get("goals", []) if g.get("server", server) == server],
    }


def markdown(report: dict[str, Any]) -> str:
    """The table: one row per bench target, one column per server (the ``--servers``,
    then any other server a side-by-side bench measured)."""
    servers: list[str] = list(report["servers"])
    for document in report["results"]:
        if document.get("server") is None:
            for row in document.get("rows", []):
                if row.get("server") and row["server"] not in servers:
                    servers.append(row["server"])
    lines = [
        f"Measured {report['date']} on {report['machine']}, load average "
        f"{report['load_average']} at the start; `tox -e bench` (wrk -t1 -c32, "
        f"{report['duration']:g} s per target, {report['rounds']} alternating rounds, medians).",
        "",
        "Cells: req/s (ratio to the bench's first row) · p50/p95/p99 ms · server CPU µs per "
        "request (from /proc, user+system of the server process tree over the run).",
        "",
        "| bench | target | " + " | ".join(servers) + " |",
        "|---|---|" + "---|" * len(servers),
    ]
    by_key = {(d["bench"], d.get("server")): d for d in report["results"]}
    goal_lines: list[str] = []
    notes: list[str] = []
    for bench in report["benches"]:
        documents = [by_key.get((bench, server)) for server in servers]
        present = [d for d in documents if d is not None]
        once = by_key.get((bench, None))
        if not present and once is not None and once.get("rows"):
            documents = [_side_by_side(once, server) for server in servers]
            present = documents
            base = next((r.get("server") for r in once["rows"] if "ratio" not in r), None)
            notes.append(
                f"- **{bench}** (every server in one run, at the same time"
                + (f"; {once['settings']}" if once.get("settings") else "")
                + ")"
                + (f": a cell's ratio is against {base} on the same target." if base else ".")
            )
        if not present:
            if once is not None:
                tail = [line for line in once.get("output", []) if line.strip()][-4:]
                tail = [" ".join(line.split()) for line in tail]
                kind = "FAILED" if "error" in once else "no HTTP server"
                notes.append(f"- **{bench}** ({kind}): " + "; ".join(tail))
            continue
        targets: list[str] = []
        for document in present:
            for row in document.get("rows", []):
                if row["target"] not in targets:
                    targets.append(row["target"])
        for target in targets:
            cells = []
            for document in documents:
                rows = {r["target"]: r for r in (document or {}).get("rows", [])}
                cells.append(_cell(rows.get(target)))
            lines.append(f"| {bench} | {target} | " + " | ".join(cells) + " |")
        for document in present:
            if "error" in document:
                lines.append(
                    f"| {bench} | FAILED on {document['server']} | "
                    + " | ".join("-" for _ in servers)
                    + " |"
                )
        goal_names: list[str] = []
        for document in present:
            for goal in document.get("goals", []):
                if goal["name"] not in goal_names:
                    goal_names.append(goal["name"])
        for name in goal_names:
            cells = []
            target_value = None
            for document in documents:
                goals = {g["name"]: g for g in (document or {}).get("goals", [])}
                goal = goals.get(name)
                if goal is not None and goal.get("goal") is not None:
                    relation = "<" if goal.get("at_most") else "≥"
                    target_value = f"{relation} {goal['goal']:g}"
                cells.append(_goal_cell(goal))
            goal_lines.append(f"| {bench}: {name} | {target_value or '-'} | " + " | ".join(cells))
    if goal_lines:
        lines += [
            "",
            "Goals (median over the rounds [range of the rounds]):",
            "",
            "| goal | target | " + " | ".join(servers) + " |",
            "|---|---|" + "---|" * len(servers),
            *(line + " |" for line in goal_lines),
        ]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def update_readme(table: str, readme: Path = README) -> None:
    """Put ``table`` between the markers in the README's Benchmarks section."""
    text = readme.read_text()
    block = f"{BEGIN}\n{table}{END}"
    if BEGIN in text:
        text = re.sub(
            re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.DOTALL
        )
    else:
        heading = "## Benchmarks\n"
        start = text.index(heading) + len(heading)
        following = text.find("\n## ", start)
        end = len(text) if following < 0 else following
        text = text[:end].rstrip("\n") + "\n\n" + block + "\n" + text[end:]
    readme.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=["hypercorn"])
    parser.add_argument("--duration", type=float, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per bench")
    parser.add_argument(
        "--only", nargs="+", choices=[b.name for b in BENCHES], help="these benches only"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for latest.*")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    parser.add_argument("--module", help="run this one module instead (arguments follow)")
    args, rest = parser.parse_known_args(argv)
    if args.module:
        return subprocess.run([sys.executable, "-m", args.module, *rest], check=False).returncode
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    benches = [b for b in BENCHES if not args.only or b.name in args.only]
    with open("/proc/loadavg") as loadavg:
        load = " ".join(loadavg.read().split()[:3])
    started = dt.datetime.now(dt.UTC)
    results = []
    for index, bench in enumerate(benches):
        if not bench.per_server:
            results.append(run_bench(bench, None, args.duration, args.rounds))
            continue
        order = args.servers if index % 2 == 0 else args.servers[::-1]
        results += [run_bench(bench, server, args.duration, args.rounds) for server in order]
    report = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "load_average": load,
        "servers": args.servers,
        "duration": args.duration,
        "rounds": args.rounds,
        "benches": [b.name for b in benches],
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    table = markdown(report)
    (args.out / "latest.md").write_text("# Latest benchmark run\n\n" + table)
    if not args.no_readme:
        update_readme(table)
    print(table)
    crashed = [f"{d['bench']} ({d.get('server')})" for d in results if "error" in d]
    if crashed:
        print(f"benches that failed to run: {', '.join(crashed)}", file=sys.stderr)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
