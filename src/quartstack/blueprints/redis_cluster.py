"""``/redis``: Redis Cluster introspection and per-node INFO."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from quart import Blueprint, current_app
from quart_schema import validate_response

from quartstack.auth.scopes import requires
from quartstack.blueprints.openapi import path_param, problems
from quartstack.integrations.base import get_backend
from quartstack.integrations.redis.client import RedisClient
from quartstack.integrations.redis.cluster import (
    parse_cluster_nodes,
    parse_cluster_slots,
)
from quartstack.integrations.redis.response_cache import invalidation_label, response_cache
from quartstack.web.problems import Problem, validation_problem
from quartstack.web.querystring import validate_query

blueprint = Blueprint("redis_cluster", __name__, url_prefix="/redis")


class SlotRange(BaseModel):
    start: int
    end: int


class ClusterNodeInfo(BaseModel):
    node_id: str
    host: str
    port: int | None
    role: Literal["master", "replica"]
    flags: list[str]
    master_id: str | None
    ping_sent: int
    pong_recv: int
    config_epoch: int
    link_state: str
    slots_count: int
    slot_ranges: list[SlotRange]


class ClusterNodes(BaseModel):
    status: Literal["success"]
    total_nodes: int
    nodes: list[ClusterNodeInfo]


class SlotEndpoint(BaseModel):
    host: str
    port: int
    node_id: str | None


class SlotRangeOwner(BaseModel):
    start_slot: int
    end_slot: int
    slots_count: int
    master: SlotEndpoint
    replicas: list[SlotEndpoint]


class ClusterSlots(BaseModel):
    status: Literal["success"]
    total_slots: int
    max_slots: int
    coverage_percentage: float
    slot_distribution: list[SlotRangeOwner]


class ClusterInfo(BaseModel):
    status: Literal["success"]
    cluster_info: dict[str, Any]


class NodeInfo(BaseModel):
    status: Literal["success"]
    node: str
    info: dict[str, Any]


class Invalidation(BaseModel):
    pattern: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Glob over cached request paths, e.g. /examples/vault/*",
    )


class Invalidated(BaseModel):
    pattern: str
    deleted: int


async def _cluster() -> RedisClient:
    redis = get_backend("redis", RedisClient)
    await redis.ensure_connected()  # the client connects lazily; then is_cluster is known
    if not redis.is_cluster:
        raise Problem(409, "not-a-cluster", "Redis runs standalone here; there is no cluster.")
    return redis


@blueprint.get("/cluster/nodes")
@requires("admin")
@validate_response(ClusterNodes)
@problems(409, 503, 504)
async def cluster_nodes() -> ClusterNodes:
    """``CLUSTER NODES``, parsed: role, flags, links and slot ranges of every node."""
    nodes = parse_cluster_nodes(await (await _cluster()).cluster_command("CLUSTER NODES"))
    return ClusterNodes.model_validate(
        {"status": "success", "total_nodes": len(nodes), "nodes": nodes}
    )


@blueprint.get("/cluster/slots")
@requires("admin")
@validate_response(ClusterSlots)
@problems(409, 503, 504)
async def cluster_slots() -> ClusterSlots:
    """Slot distribution over masters and replicas, with coverage."""
    slots = parse_cluster_slots(await (await _cluster()).cluster_slots_raw())
    return ClusterSlots.model_validate({"status": "success", **slots})


@blueprint.get("/cluster/info")
@requires("admin")
@validate_response(ClusterInfo)
@problems(409, 503, 504)
async def cluster_info() -> ClusterInfo:
    """``CLUSTER INFO`` with numbers as numbers."""
    info = await (await _cluster()).cluster_info()
    return ClusterInfo(status="success", cluster_info=info)


@blueprint.get("/nodes/<node_name>/info")
@requires("admin")
@path_param("node_name", r"^[a-zA-Z0-9_.-]+$", 100)
@validate_response(NodeInfo)
@problems(404, 422, 503, 504)
async def node_info(node_name: str) -> NodeInfo:
    """``INFO`` of one configured node (names from ``REDIS_NODES``, e.g. ``redis-1``)."""
    redis = get_backend("redis", RedisClient)
    node = next((n for n in redis.nodes if n.name == node_name), None)
    if node is None:
        known = ", ".join(n.name for n in redis.nodes)
        raise Problem(404, "unknown-node", f"No Redis node named {node_name!r} (known: {known}).")
    info = await redis.on_node(node, "info", lambda c: c.info())
    return NodeInfo(status="success", node=node_name, info=dict(info))


@blueprint.delete("/cache/responses")
@requires("admin")
@validate_query(Invalidation)
@validate_response(Invalidated)
@problems(409, 422, 503, 504)
async def invalidate_responses(query_args: Invalidation) -> Invalidated:
    """Drop cached responses whose path matches the glob ``pattern``, e.g.
    ``/examples/vault/*``: SCAN on every master, never KEYS."""
    get_backend("redis", RedisClient)  # 503 "not configured" without Redis, like every route
    cache = response_cache()
    if cache is None:  # Redis is there, RESPONSE_CACHE_ENABLED=false
        raise Problem(409, "cache-disabled", "The response cache is not enabled.")
    label = invalidation_label(current_app, query_args.pattern)
    if label is None:
        raise validation_problem(
            "query string",
            "pattern",
            "matches no cached route (/examples/vault/..., /health/all)",
        )
    deleted = await cache.invalidate(query_args.pattern, label)
    return Invalidated(pattern=query_args.pattern, deleted=deleted)
