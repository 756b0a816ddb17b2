"""Projection lag and throughput of ``quartstack worker`` (a measurement, not a test).

Starts an nx-27017 (MongoDB stand-in, from the venv) and a real ``quartstack worker``
on the machine's RabbitMQ (guest on ``/``) and Redis, under names of its own. Publishes
events to the exchange as the outbox relay does — at a steady rate first, then one burst —
and reports the worker's ``worker_projection_lag_seconds`` quantiles (event occurred →
applied; interpolated within histogram buckets) and the burst's drain rate. Everything it
created is deleted at the end.

    .venv/bin/python -m bench.projection_lag --rate 300 --seconds 10 --burst 3000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import httpx

import redis


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


def _samples(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus' histogram_quantile over cumulative (le, count) pairs."""
    total = buckets[-1][1]
    rank, previous_le, previous_count = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return previous_le
            return previous_le + (le - previous_le) * (rank - previous_count) / max(
                count - previous_count, 1e-9
            )
        previous_le, previous_count = le, count
    return previous_le


def lag_buckets(url: str) -> list[tuple[float, float]]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    pairs = []
    for key, value in _samples(text, "worker_projection_lag_seconds_bucket").items():
        le = key.split('le="', 1)[1].split('"', 1)[0]
        pairs.append((float("inf") if le == "+Inf" else float(le), value))
    return sorted(pairs)


def applied(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        v
        for k, v in _samples(text, "worker_events_consumed_total").items()
        if 'result="applied"' in k
    )


def _event() -> tuple[str, bytes]:
    now = datetime.now(UTC).isoformat()
    event_id = str(uuid.uuid4())
    body = {
        "schema_version": 1,
        "event_id": event_id,
        "type": "user.registered",
        "occurred_at": now,
        "data": {
            "id": str(uuid.uuid4()),
            "email": f"b-{uuid.uuid4().hex[:10]}@d{uuid.uuid4().int % 20}.example",
            "name": "Bench",
            "created_at": now,
        },
    }
    return event_id, json.dumps(body).encode()


async def publish(exchange: aio_pika.abc.AbstractExchange, count: int, rate: float | None) -> None:
    """``count`` events, paced at ``rate`` per second, or as fast as confirms allow
    (200 in flight) when ``rate`` is None."""
    if rate is None:
        for start in range(0, count, 200):
            await asyncio.gather(*(_send(exchange) for _ in range(min(200, count - start))))
        return
    started = time.monotonic()
    for n in range(count):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await _send(exchange)


async def _send(exchange: aio_pika.abc.AbstractExchange) -> None:
    event_id, body = _event()
    await exchange.publish(
        aio_pika.Message(
            body,
            message_id=event_id,
            type="user.registered",
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key="user.registered",
    )


async def run(args: argparse.Namespace) -> None:
    suffix = uuid.uuid4().hex[:8]
    names = {"exchange": f"bench-events-{suffix}", "queue": f"bench-projections-{suffix}"}
    prefix = f"bench-{suffix}"
    data_dir = Path(tempfile.mkdtemp(prefix="bench-nx-"))
    mongo_port, worker_port = _free_port(), _free_port()
    nx = subprocess.Popen(
        [str(Path(sys.executable).with_name("nx-27017")), "--data-dir", "memory",
         "--host", "127.0.0.1", "-p", str(mongo_port),
         "--log-file", str(data_dir / "log"), "--pid-file", str(data_dir / "pid")],
        cwd=data_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    env = {
        **os.environ,
        "RABBITMQ_HOST": "127.0.0.1",
        "MONGODB_HOST": "127.0.0.1",
        "MONGODB_PORT": str(mongo_port),
        "MONGODB_DATABASE": f"bench_{suffix}",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_KEY_PREFIX": prefix,
        "EVENTS_EXCHANGE": names["exchange"],
        "WORKER_QUEUE": names["queue"],
        "WORKER_PREFETCH": str(args.prefetch),
        "LOG_LEVEL": "WARNING",
    }
    url = f"http://127.0.0.1:{worker_port}"
    with open(data_dir / "worker.log", "w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "quartstack", "worker", "--bind", f"127.0.0.1:{worker_port}"],
            env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1/")
    try:
        _wait(f"{url}/health/ready")
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            names["exchange"], aio_pika.ExchangeType.TOPIC, durable=True
        )
        steady = int(args.rate * args.seconds)
        await publish(exchange, steady, args.rate)
        while applied(url) < steady:
            await asyncio.sleep(0.1)
        buckets = lag_buckets(url)
        print(f"steady {args.rate:g}/s for {args.seconds:g} s ({steady} events, prefetch "
              f"{args.prefetch}): lag p50 {quantile(buckets, 0.5) * 1000:.0f} ms, "
              f"p95 {quantile(buckets, 0.95) * 1000:.0f} ms")  # fmt: skip
        began = time.monotonic()
        await publish(exchange, args.burst, None)
        published = time.monotonic() - began
        while applied(url) < steady + args.burst:
            await asyncio.sleep(0.05)
        drained = time.monotonic() - began
        print(f"burst of {args.burst}: published in {published:.1f} s, all applied after "
              f"{drained:.1f} s -> {args.burst / drained:.0f} events/s")  # fmt: skip
    finally:
        worker.terminate()
        worker.wait(30)
        nx.terminate()
        nx.wait(10)
        with contextlib.suppress(Exception):
            await connection.close()
        await _delete_broker_objects(names)
        client = redis.Redis()
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.unlink(*keys[start : start + 500])
        shutil.rmtree(data_dir, ignore_errors=True)


async def _delete_broker_objects(names: dict[str, str]) -> None:
    """On a fresh connection: the broker may have restarted during the run."""
    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1/")
    async with connection:
        channel = await connection.channel()
        for queue in (names["queue"], f"{names['queue']}.dlq"):
            await channel.queue_delete(queue)
        for exchange in (names["exchange"], f"{names['queue']}.dlx"):
            await channel.exchange_delete(exchange)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=300, help="steady events per second")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--burst", type=int, default=3000)
    parser.add_argument("--prefetch", type=int, default=32)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
