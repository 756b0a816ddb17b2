"""bench/all.py's report (no benchmark runs here): servers side by side, goals, the
README block replaced in place; wrkbench's p95 script and server choice."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import bench.wrkbench
import pytest
from bench.all import BEGIN, END, markdown, update_readme
from bench.openloop import OpenLoopResult
from bench.wrkbench import (
    P95_SCRIPT,
    Target,
    WrkResult,
    alternating_rounds,
    reverse_on_odd_rounds,
    server_choice,
    with_p95,
)


def row(target: str, rps: float, ratio: float, cpu: int) -> dict[str, object]:
    return {
        "target": target,
        "rps": rps,
        "ratio": ratio,
        "p50_ms": 1.0,
        "p95_ms": 2.5,
        "p99_ms": 4.0,
        "cpu_us": cpu,
        "non_2xx": 0,
        "socket_errors": 0,
    }


def report() -> dict[str, object]:
    def document(server: str, rps: float, ratio: float) -> dict[str, object]:
        return {
            "bench": "messaging",
            "server": server,
            "rows": [row("health", rps, 1.0, 300), row("publish", rps * ratio, ratio, 500)],
            "goals": [
                {
                    "name": "publish / health",
                    "value": ratio,
                    "goal": 0.6,
                    "at_most": False,
                    "met": ratio >= 0.6,
                    "rounds": [ratio - 0.1, ratio, ratio + 0.1],
                }
            ],
        }

    return {
        "date": "2026-12-02 04:00 UTC",
        "machine": "test cpu, 2 cores",
        "load_average": "1.0 1.0 1.0",
        "servers": ["hypercorn", "uvicorn"],
        "duration": 3.0,
        "rounds": 3,
        "benches": ["messaging", "redaction"],
        "results": [
            document("hypercorn", 1000, 0.5),
            document("uvicorn", 2000, 0.7),
            {"bench": "redaction", "server": None, "output": ["header", "clean 2.4x"]},
        ],
    }


def test_servers_side_by_side_with_goals():
    table = markdown(report())
    assert "| bench | target | hypercorn | uvicorn |" in table
    assert "| messaging | publish | 500 (0.50) · 1.0/2.5/4.0 · 500 | 1400 (0.70)" in table
    assert "| messaging: publish / health | ≥ 0.6 | 0.50 [0.40-0.60] ✗ | 0.70 [0.60-0.80] ✓ |" in (
        table
    )
    assert "2026-12-02 04:00 UTC on test cpu, 2 cores" in table
    assert "**redaction** (no HTTP server): header; clean 2.4x" in table


def side_by_side_document() -> dict[str, object]:
    """bench/servers.py's JSON: one run, rows and goals saying which server they are from."""
    return {
        "bench": "servers",
        "server": None,
        "settings": "32 connections, both servers at once",
        "rows": [
            {  # the baseline: no ratio of its own
                **{k: v for k, v in row("/health/", 1000, 1.0, 600).items() if k != "ratio"},
                "server": "hypercorn",
            },
            {**row("/health/", 1900, 1.9, 350), "server": "uvicorn"},
        ],
        "goals": [
            {
                "name": "uvicorn / hypercorn /health/",
                "value": 1.9,
                "goal": 1.8,
                "at_most": False,
                "met": True,
                "rounds": [1.85, 1.95],
                "server": "uvicorn",
            }
        ],
        "output": ["/health/: 1.90 (meets the 1.8x goal)"],
    }


def test_a_side_by_side_bench_fills_the_server_columns():
    data = report()
    data["benches"] = ["messaging", "servers", "redaction"]
    data["results"].insert(2, side_by_side_document())  # type: ignore[attr-defined]
    table = markdown(data)
    assert (
        "| servers | /health/ | 1000 · 1.0/2.5/4.0 · 600 | 1900 (1.90) · 1.0/2.5/4.0 · 350 |"
        in (table)
    )
    goal = "| servers: uvicorn / hypercorn /health/ | ≥ 1.8 | - | 1.90 [1.85-1.95] ✓ |"
    assert goal in table
    assert "**servers** (every server in one run" in table
    assert "ratio is against hypercorn on the same target" in table
    assert "**servers** (no HTTP server)" not in table


def test_a_side_by_side_bench_adds_the_server_it_measured_as_a_column():
    data = report()
    data["servers"] = ["hypercorn"]
    data["benches"] = ["messaging", "servers"]
    data["results"] = [data["results"][0], side_by_side_document()]  # type: ignore[index]
    table = markdown(data)
    assert "| bench | target | hypercorn | uvicorn |" in table
    assert "| messaging | publish | 500 (0.50) · 1.0/2.5/4.0 · 500 | - |" in table
    assert "| servers | /health/ | 1000 · 1.0/2.5/4.0 · 600 | 1900 (1.90)" in table


def test_readme_block_is_replaced_in_place(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Benchmarks\n\nIntro.\n\n## Next\n\nrest\n")
    update_readme("first table\n", readme)
    update_readme("second table\n", readme)
    text = readme.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "second table" in text and "first table" not in text
    assert text.index("Intro.") < text.index(BEGIN) < text.index("## Next")


def test_p95_is_added_to_a_script_without_its_own_report(tmp_path: Path):
    assert with_p95(None, tmp_path) == P95_SCRIPT
    plain = tmp_path / "post.lua"
    plain.write_text('wrk.method = "POST"\n')
    combined = with_p95(plain, tmp_path).read_text()
    assert combined.startswith('wrk.method = "POST"') and "percentile(95)" in combined
    reporting = tmp_path / "own.lua"
    reporting.write_text("done = function(summary, latency, requests) end\n")
    assert with_p95(reporting, tmp_path) == reporting


def test_hypercorn_needs_no_server_option():
    assert server_choice("hypercorn") == ({}, [])
    assert server_choice("uvicorn") == ({"SERVER": "uvicorn"}, ["--server", "uvicorn"])


def test_open_loop_percentiles():
    result = OpenLoopResult(
        rate=10, sent=100, ok=100, failed=0, achieved_rps=10, latencies_ms=list(range(1, 101))
    )
    assert 94 <= result.percentile(95) <= 96
    assert result.as_wrk_result().p95 == result.percentile(95)


def test_alternating_rounds_change_the_order_and_warm_up_once(monkeypatch: pytest.MonkeyPatch):
    calls: list[tuple[list[str], float]] = []

    def fake_measure(
        base_url: str, targets: Sequence[Target], *, warmup: float, **_: object
    ) -> list[tuple[Target, WrkResult]]:
        calls.append(([t.name for t in targets], warmup))
        return [(t, WrkResult(requests=1, requests_per_second=len(calls))) for t in targets]

    monkeypatch.setattr(bench.wrkbench, "measure", fake_measure)
    targets = [Target("a"), Target("b"), Target("c")]
    runs, rounds = alternating_rounds("http://x", targets, rounds=3, duration=1, warmup=2)
    assert calls == [(["a", "b", "c"], 2), (["b", "c", "a"], 0), (["a", "b", "c"], 0)]
    assert [r.requests_per_second for r in runs["b"]] == [1, 2, 3]
    assert rounds[1]["a"].requests_per_second == 2

    calls.clear()
    alternating_rounds("http://x", targets, rounds=2, order=reverse_on_odd_rounds, warmup=0)
    assert [names for names, _ in calls] == [["a", "b", "c"], ["c", "b", "a"]]
    calls.clear()
    alternating_rounds("http://x", targets, rounds=2, order=None, warmup=0)
    assert [names for names, _ in calls] == [["a", "b", "c"], ["a", "b", "c"]]
