"""Parsers for ``CLUSTER NODES``, ``CLUSTER SLOTS`` and INFO text into API bodies.

We parse the raw replies ourselves (rather than redis-py's condensed dicts) so the
numbers match what ``redis-cli`` shows, field for field.
"""

from __future__ import annotations

from typing import Any

MAX_SLOTS = 16384


def _number(value: str) -> int | float | str:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def parse_info_text(text: str) -> dict[str, Any]:
    """``key:value`` lines (INFO, CLUSTER INFO) with numbers as numbers."""
    result: dict[str, Any] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        result[key] = _number(value)
    return result


def _slot_ranges(fields: list[str]) -> list[dict[str, int]]:
    ranges = []
    for field in fields:
        if field.startswith("["):  # a slot being migrated/imported
            continue
        start, _, end = field.partition("-")
        ranges.append({"start": int(start), "end": int(end or start)})
    return ranges


def parse_cluster_nodes(text: str) -> list[dict[str, Any]]:
    """One dict per line of ``CLUSTER NODES``."""
    nodes = []
    for line in text.strip().splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        node_id, address, flags, master, ping, pong, epoch, link = parts[:8]
        host_port = address.split("@", 1)[0].split(",", 1)[0]
        host, _, port = host_port.rpartition(":")
        flag_list = flags.split(",")
        ranges = _slot_ranges(parts[8:])
        nodes.append(
            {
                "node_id": node_id,
                "host": host,
                "port": int(port) if port.isdigit() else None,
                "role": "master" if "master" in flag_list else "replica",
                "flags": flag_list,
                "master_id": None if master == "-" else master,
                "ping_sent": int(ping),
                "pong_recv": int(pong),
                "config_epoch": int(epoch),
                "link_state": link,
                "slots_count": sum(r["end"] - r["start"] + 1 for r in ranges),
                "slot_ranges": ranges,
            }
        )
    return nodes


def _endpoint(entry: list[Any]) -> dict[str, Any]:
    return {
        "host": str(entry[0]),
        "port": int(entry[1]),
        "node_id": str(entry[2]) if len(entry) > 2 else None,
    }


def parse_cluster_slots(reply: list[Any]) -> dict[str, Any]:
    """``CLUSTER SLOTS`` into the distribution body, sorted by first slot."""
    distribution: list[dict[str, Any]] = []
    for item in sorted(reply, key=lambda entry: int(entry[0])):
        start, end = int(item[0]), int(item[1])
        distribution.append(
            {
                "start_slot": start,
                "end_slot": end,
                "slots_count": end - start + 1,
                "master": _endpoint(item[2]),
                "replicas": [_endpoint(replica) for replica in item[3:]],
            }
        )
    total = sum(entry["slots_count"] for entry in distribution)
    return {
        "total_slots": total,
        "max_slots": MAX_SLOTS,
        "coverage_percentage": round(total * 100 / MAX_SLOTS, 2),
        "slot_distribution": distribution,
    }
