"""200 concurrent requests: none fails, and the server never sees more connections
from the app than the pool maximum.

Checked on the server side twice over: the database account is limited to the
pool maximum (one connection more would be refused and fail a request), and the
account's sessions are sampled while the requests run.
"""

from __future__ import annotations

import asyncio

from tests.databases.helpers import QUERY, mysql_peak, postgres_peak
from tests.support.app import metric_value, running_app

POOL_MAX = 5
REQUESTS = 200


async def _burst(client, name: str) -> list[int]:
    responses = await asyncio.gather(*(client.get(QUERY.format(name)) for _ in range(REQUESTS)))
    return [response.status_code for response in responses]


async def test_postgres_200_concurrent_requests_stay_within_the_pool(db_settings, postgres_account):
    postgres_account.set_connection_limit(POOL_MAX)
    try:
        async with running_app(**dict(db_settings, postgres_pool_max=POOL_MAX)) as (_, client):
            async with postgres_peak(postgres_account) as peak:
                statuses = await _burst(client, "postgres")
            assert statuses == [200] * REQUESTS
            assert 1 <= peak() <= POOL_MAX
            assert metric_value("backend_pool_connections", service="postgres", state="in_use") == 0
    finally:
        postgres_account.set_connection_limit(-1)


async def test_mysql_200_concurrent_requests_stay_within_the_pool(db_settings, mysql_account):
    mysql_account.set_connection_limit(POOL_MAX)
    try:
        async with running_app(**dict(db_settings, mysql_pool_max=POOL_MAX)) as (_, client):
            with mysql_peak(mysql_account) as peak:
                statuses = await _burst(client, "mysql")
            assert statuses == [200] * REQUESTS
            assert 1 <= peak() <= POOL_MAX
            assert metric_value("backend_pool_connections", service="mysql", state="in_use") == 0
    finally:
        mysql_account.set_connection_limit(0)


async def test_mongodb_200_concurrent_requests_stay_within_the_pool(
    db_settings, accounts, mongo_front
):
    """Through the SCRAM front, which counts logged-in connections: the pool's own
    (PyMongo's monitoring connections never log in)."""
    accounts.publish(
        "mongodb", {"user": mongo_front.user, "password": mongo_front.password, "database": "qs"}
    )
    settings = dict(db_settings, mongodb_port=mongo_front.port, mongodb_pool_max=POOL_MAX)
    async with running_app(**settings) as (_, client):
        statuses = await _burst(client, "mongodb")
        assert statuses == [200] * REQUESTS
        assert metric_value("backend_pool_connections", service="mongodb", state="in_use") == 0
        assert metric_value("backend_pool_connections", service="mongodb", state="idle") >= 1
    assert 1 <= mongo_front.authenticated_peak <= POOL_MAX
    assert mongo_front.failed_logins == 0
