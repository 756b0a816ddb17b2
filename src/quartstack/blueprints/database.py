"""``/examples/database``: one example query per database, over its pool."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel
from quart import Blueprint
from quart_schema import validate_response

from quartstack.auth.scopes import requires
from quartstack.blueprints.openapi import problems
from quartstack.integrations.base import get_backend
from quartstack.integrations.mongodb import MongoDatabase
from quartstack.integrations.mysql import MySQLPool
from quartstack.integrations.postgres import PostgresPool

blueprint = Blueprint("database", __name__, url_prefix="/examples/database")

_PG_QUERY = "SELECT current_timestamp"
_MYSQL_QUERY = "SELECT NOW()"


class QueryResult(BaseModel):
    database: Literal["PostgreSQL", "MySQL"]
    query: str
    result: str


class Collections(BaseModel):
    database: Literal["MongoDB"]
    collections: list[str]
    count: int


@blueprint.get("/postgres/query")
@requires("read")
@validate_response(QueryResult)
@problems(429, 503, 504)
async def postgres_query() -> QueryResult:
    """``SELECT current_timestamp`` over the asyncpg pool."""
    value = await get_backend("postgres", PostgresPool).scalar("query", _PG_QUERY)
    return QueryResult(database="PostgreSQL", query=_PG_QUERY, result=value.isoformat())


@blueprint.get("/mysql/query")
@requires("read")
@validate_response(QueryResult)
@problems(429, 503, 504)
async def mysql_query() -> QueryResult:
    """``SELECT NOW()`` over the aiomysql pool."""
    value = await get_backend("mysql", MySQLPool).scalar("query", _MYSQL_QUERY)
    return QueryResult(database="MySQL", query=_MYSQL_QUERY, result=value.isoformat())


@blueprint.get("/mongodb/query")
@requires("read")
@validate_response(Collections)
@problems(429, 503, 504)
async def mongodb_query() -> Collections:
    """The collections of the configured MongoDB database."""
    names = await get_backend("mongodb", MongoDatabase).collection_names()
    return Collections(database="MongoDB", collections=names, count=len(names))
