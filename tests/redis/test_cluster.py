"""Redis Cluster: a real 6-node cluster (3 masters, 3 replicas) of redis-server processes."""

from __future__ import annotations

import asyncio
import time
import uuid

from redis.cluster import RedisCluster as ClusterClient

from tests.support.app import TEST_KEY_PREFIX, metric_value, running_app


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
        assert slots["max_slots"] == 16384
        cli_ranges = {
            (int(r.split("-")[0]), int(r.split("-")[-1])): parts
            for parts in expected.values()
            for r in parts[8:]
        }
        assert len(slots["slot_distribution"]) == len(cli_ranges) == 3
        for entry in slots["slot_distribution"]:
            owner = cli_ranges[(entry["start_slot"], entry["end_slot"])]
            assert entry["slots_count"] == entry["end_slot"] - entry["start_slot"] + 1
            assert entry["master"]["node_id"] == owner[0]
            assert f"{entry['master']['host']}:{entry['master']['port']}" == owner[1].split("@")[0]
            replica_ids = {p[0] for p in expected.values() if p[3] == owner[0]}
            assert {r["node_id"] for r in entry["replicas"]} == replica_ids

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
        assert node_info["status"] == "success" and node_info["node"] == "redis-2"
        assert node_info["info"]["tcp_port"] == redis_cluster.ports[1]
        cli_server = redis_cluster.cli(redis_cluster.ports[1], "info", "server")
        assert f"run_id:{node_info['info']['run_id']}" in cli_server
        unknown = await c.get("/redis/nodes/redis-7/info")
        assert unknown.status_code == 404
        assert unknown.content_type == "application/problem+json"
        assert (await unknown.get_json())["type"] == "/problems/unknown-node"

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
        try:
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
            health = await c.get("/health/redis")
            assert health.status_code == 200
            body = await health.get_json()
            assert body["cluster_state"] == "ok"
            dead = [n for n in body["nodes"] if n["port"] == victim]
            assert dead[0]["status"] == "unhealthy"
            nodes = (await (await c.get("/redis/cluster/nodes")).get_json())["nodes"]
            assert "fail" in next(n for n in nodes if n["port"] == victim)["flags"]
        finally:
            # the killed node back, as a replica, so later tests see six linked nodes
            redis_cluster.restore_node(victim)


async def test_rate_limit_shared_on_the_cluster(redis_cluster, client_ip):
    settings = dict(
        redis_nodes=redis_cluster.node_list.split(","),
        rate_limit_enabled=True,
        rate_limit_default=6,
    )
    scope = {"scope_base": {"client": (client_ip, 40000)}}
    async with running_app(**settings) as (_, first), running_app(**settings) as (_, second):
        statuses = []
        for i in range(10):
            statuses.append((await (first if i % 2 else second).get("/", **scope)).status_code)
        assert statuses == [200] * 6 + [429] * 4
    pattern = f"{TEST_KEY_PREFIX}:rl:{{{client_ip}}}*"
    holders = [
        port
        for port in redis_cluster.masters()
        if redis_cluster.cli(port, "--scan", "--pattern", pattern).split()
    ]
    assert len(holders) == 1  # one hash tag per client: one slot, one master


async def test_idempotency_on_the_cluster(redis_cluster, prefix):
    key = f"idem-{uuid.uuid4().hex}"
    async with running_app(redis_nodes=redis_cluster.node_list.split(",")) as (_, c):
        path = f"/examples/cache/{prefix}?value=one"
        first = await c.post(path, headers={"Idempotency-Key": key})
        replay = await c.post(path, headers={"Idempotency-Key": key})
        assert replay.headers["Idempotency-Replayed"] == "true"
        assert await replay.get_json() == await first.get_json()
        reused = await c.post(
            f"/examples/cache/{prefix}?value=two", headers={"Idempotency-Key": key}
        )
        assert reused.status_code == 422
        await c.delete(f"/examples/cache/{prefix}")


async def test_invalidation_scans_every_master(redis_cluster):
    name = f"s{uuid.uuid4().hex[:10]}"
    direct = ClusterClient(host="127.0.0.1", port=redis_cluster.masters()[0])
    for i in range(60):
        direct.set(f"{TEST_KEY_PREFIX}:resp:/examples/vault/secret/{name}-{i}", "{}", ex=300)
    pattern = f"{TEST_KEY_PREFIX}:resp:/examples/vault/secret/{name}-*"

    def on_each_master():
        return [
            redis_cluster.cli(port, "--scan", "--pattern", pattern).split()
            for port in redis_cluster.masters()
        ]

    assert all(on_each_master())
    async with running_app(redis_nodes=redis_cluster.node_list.split(",")) as (_, c):
        response = await c.delete(f"/redis/cache/responses?pattern=/examples/vault/secret/{name}-*")
        assert response.status_code == 200
        assert (await response.get_json())["deleted"] == 60
    assert not any(on_each_master())
    direct.close()


async def test_one_node_reporting_cluster_mode_is_used_as_a_cluster(redis_cluster, prefix):
    settings = dict(redis_host="127.0.0.1", redis_port=redis_cluster.masters()[0])
    async with running_app(**settings) as (_, c):
        keys = [f"{prefix}:{i}" for i in range(20)]  # spread over every master's slots
        for key in keys:
            assert (await c.post(f"/examples/cache/{key}?value={key}")).status_code == 200
        for key in keys:
            assert (await (await c.get(f"/examples/cache/{key}")).get_json())["value"] == key
        info = await c.get("/redis/cluster/info")
        assert info.status_code == 200
        assert (await info.get_json())["cluster_info"]["cluster_state"] == "ok"
        health = await (await c.get("/health/redis")).get_json()
        assert health["cluster_enabled"] is True and health["total_nodes"] == 1
        for key in keys:
            await c.delete(f"/examples/cache/{key}")


async def test_a_burst_beyond_the_pool_is_limited_exactly(redis_cluster, client_ip):
    """Pool exhaustion is backpressure: 200 concurrent requests from one client with a
    pool of 5 per node, and exactly the limit is answered 2xx (none fail open)."""
    settings = dict(
        redis_nodes=redis_cluster.node_list.split(","),
        rate_limit_enabled=True,
        rate_limit_default=50,
        redis_pool_max=5,
    )
    scope = {"scope_base": {"client": (client_ip, 40000)}}
    for port in redis_cluster.masters():  # the first batch on each master loads the script
        redis_cluster.cli(port, "script", "flush")
    async with running_app(**settings) as (_, c):
        errors = metric_value("rate_limit_store_errors_total")
        responses = await asyncio.gather(*(c.get("/", **scope) for _ in range(200)))
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == 50, sorted(set(statuses))
        assert statuses.count(429) == 150
        assert metric_value("rate_limit_store_errors_total") == errors


async def test_a_burst_of_reads_waits_for_connections(redis_cluster, prefix):
    """Commands and pipelines wait for a free connection on the cluster (as the standalone
    pool does) instead of failing when REDIS_POOL_MAX are busy."""
    settings = dict(redis_nodes=redis_cluster.node_list.split(","), redis_pool_max=3)
    async with running_app(**settings) as (_, c):
        writes = await asyncio.gather(
            *(c.post(f"/examples/cache/{prefix}:{i}?value={i}") for i in range(100))
        )
        reads = await asyncio.gather(*(c.get(f"/examples/cache/{prefix}:{i}") for i in range(100)))
        assert [r.status_code for r in writes + reads] == [200] * 200
        assert [(await r.get_json())["value"] for r in reads] == [str(i) for i in range(100)]
        await asyncio.gather(*(c.delete(f"/examples/cache/{prefix}:{i}") for i in range(100)))
