"""Redis Cluster: a real 6-node cluster (3 masters, 3 replicas) of redis-server processes."""

from __future__ import annotations

import asyncio
import time

from tests.support.app import running_app


def _cli_nodes(cluster, port):
    nodes = {}
    for line in cluster.cli(port, "cluster", "nodes").strip().splitlines():
        parts = line.split()
        nodes[parts[0]] = parts
    return nodes


async def test_introspection_matches_redis_cli(redis_cluster):
    async with running_app(redis_nodes=redis_cluster.node_list.split(",")) as (_, c):
        body = await (await c.get("/redis/cluster/nodes")).get_json()
        expected = _cli_nodes(redis_cluster, redis_cluster.ports[0])
        assert body["status"] == "success"
        assert body["total_nodes"] == len(expected) == 6
        for node in body["nodes"]:
            parts = expected[node["node_id"]]
            assert f"{node['host']}:{node['port']}" == parts[1].split("@")[0]
            assert node["config_epoch"] == int(parts[6])
            assert node["link_state"] == parts[7]
            assert node["flags"] == parts[2].split(",")
            assert [f"{r['start']}-{r['end']}" for r in node["slot_ranges"]] == parts[8:]
        assert sum(n["slots_count"] for n in body["nodes"] if n["role"] == "master") == 16384

        slots = await (await c.get("/redis/cluster/slots")).get_json()
        assert slots["total_slots"] == 16384 and slots["coverage_percentage"] == 100.0
        assert len(slots["slot_distribution"]) == 3

        info = (await (await c.get("/redis/cluster/info")).get_json())["cluster_info"]
        cli_info = dict(
            line.split(":", 1)
            for line in redis_cluster.cli(redis_cluster.ports[0], "cluster", "info").split()
            if ":" in line
        )
        for key in (
            "cluster_state",
            "cluster_slots_assigned",
            "cluster_known_nodes",
            "cluster_size",
        ):
            assert str(info[key]) == cli_info[key]
        assert isinstance(info["cluster_slots_assigned"], int)

        node_info = await (await c.get("/redis/nodes/redis-2/info")).get_json()
        assert node_info["info"]["tcp_port"] == redis_cluster.ports[1]

        health = await c.get("/health/redis")
        assert health.status_code == 200
        body = await health.get_json()
        assert body["cluster_enabled"] is True and body["cluster_state"] == "ok"
        assert body["total_nodes"] == 6
        assert all(n["status"] == "healthy" for n in body["nodes"])


async def test_keys_land_on_every_master(redis_cluster, prefix):
    async with running_app(redis_nodes=redis_cluster.node_list.split(",")) as (_, c):
        keys = [f"{prefix}:{i}" for i in range(60)]
        for key in keys:
            assert (await c.post(f"/examples/cache/{key}?value={key}")).status_code == 200
        for key in keys:
            assert (await (await c.get(f"/examples/cache/{key}")).get_json())["value"] == key
        for port in redis_cluster.masters():
            found = redis_cluster.cli(port, "--scan", "--pattern", f"{prefix}:*").split()
            assert found, f"no key on master {port}"
        for key in keys:
            await c.delete(f"/examples/cache/{key}")


async def test_failover_recovers_without_restart(redis_cluster, prefix):
    settings = dict(
        redis_nodes=redis_cluster.node_list.split(","),
        circuit_recovery_seconds=1,
        backend_timeout_seconds=1,
    )
    async with running_app(**settings) as (_, c):
        keys = [f"{prefix}:{i}" for i in range(30)]
        for key in keys:
            assert (await c.post(f"/examples/cache/{key}?value=v")).status_code == 200
        victim = redis_cluster.masters()[0]
        redis_cluster.kill(victim)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            statuses = [(await c.get(f"/examples/cache/{key}")).status_code for key in keys]
            if all(s == 200 for s in statuses):
                break
            assert all(s in (200, 503, 504) for s in statuses), statuses
            await asyncio.sleep(0.5)
        else:
            raise AssertionError("cache routes did not recover after failover")
        assert len(redis_cluster.masters()) == 3  # the replica was promoted
        for key in keys:
            assert (await c.post(f"/examples/cache/{key}?value=w")).status_code == 200
    # bring the killed node back as a replica so later tests see six nodes
    redis_cluster.start_node(victim)
    redis_cluster.wait_ok()
    redis_cluster.wait_replicas_linked()
