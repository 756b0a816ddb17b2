"""The ``fuzz`` gate (``tox -e fuzz``): schemathesis against a real ``quartstack serve``
with every backend configured as the suite does (the machine's PostgreSQL and MariaDB
with an account of its own, RabbitMQ with a vhost and user of its own, a private
``redis-server``, nx-27017 for MongoDB, the Vault test server holding every
credential): generated requests write keys and queues, never into shared ones. It
fails on any 5xx, any answer that does not match the documented status, schema or
content type, and any secret the test Vault issued appearing in a response.
Deterministic (``--generation-deterministic``) and bounded per operation.

Not named ``test_*.py``: it needs the ``schemathesis`` CLI, which only the fuzz env
installs, so the default suite does not collect it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.rabbitmq.broker import BrokerAccount, rabbitmqctl, write_rabbitmq_secret
from tests.support.databases import MySQLDatabase, PostgresDatabase
from tests.support.mongo import NxMongoServer
from tests.support.net import free_port, wait_for_port
from tests.support.process import ServiceProcess
from tests.support.redis_cluster import die_with_parent
from tests.support.vault import VaultTestServer

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "100"))
SECRET_NAME = "0"


@contextmanager
def _private_redis(directory: Path) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def _private_vhost(suffix: str) -> Iterator[BrokerAccount]:
    account = BrokerAccount(f"qs-fuzz-{suffix}", f"qs-fuzz-{suffix}", secrets.token_hex(12))
    rabbitmqctl("add_vhost", account.vhost)
    try:
        rabbitmqctl("add_user", account.user, account.password)
        rabbitmqctl("set_permissions", "-p", account.vhost, account.user, ".*", ".*", ".*")
        yield account
    finally:
        rabbitmqctl("delete_user", account.user, check=False)
        rabbitmqctl("delete_vhost", account.vhost, check=False)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    suffix = uuid.uuid4().hex[:8]
    issued: list[str] = []
    with (
        VaultTestServer() as vault,
        NxMongoServer() as mongo,
        _private_redis(tmp_path_factory.mktemp("redis")) as redis_port,
        _private_vhost(suffix) as broker,
    ):
        postgres, mysql = PostgresDatabase(), MySQLDatabase()
        pg_db, my_db = postgres.create(), mysql.create()
        try:
            mount = f"fuzz-{suffix}"
            vault.enable_kv_v2(mount)
            vault.write_secret("postgres", pg_db.secret(), mount=mount)
            vault.write_secret("mysql", my_db.secret(), mount=mount)
            vault.write_secret(
                "mongodb", {"user": "", "password": "", "database": f"fuzz_{suffix}"}, mount=mount
            )
            write_rabbitmq_secret(vault, mount, broker)
            example = {
                "password": "fz-" + secrets.token_hex(12),
                "api_token": "ft-" + secrets.token_hex(12),
                "database_url": f"postgres://app:fu-{secrets.token_hex(8)}@db/app",
                "owner": "fuzz",
            }
            # Named as schemathesis's coverage phase names a service (the shortest
            # string of the pattern), so generated requests read it.
            vault.write_secret(SECRET_NAME, example, mount=mount)
            issued += [pg_db.password, my_db.password, broker.password, vault.root_token]
            issued += [example["password"], example["api_token"]]
            env = {
                "RATE_LIMIT_ENABLED": "false",
                "VAULT_ADDR": vault.url,
                "VAULT_TOKEN": vault.root_token,
                "VAULT_MOUNT": mount,
                "POSTGRES_HOST": "127.0.0.1",
                "MYSQL_HOST": "127.0.0.1",
                "MONGODB_HOST": "127.0.0.1",
                "MONGODB_PORT": str(mongo.port),
                "REDIS_HOST": "127.0.0.1",
                "REDIS_PORT": str(redis_port),
                "RABBITMQ_HOST": "127.0.0.1",
                "CIRCUIT_FAILURE_THRESHOLD": "1000",
            }
            migrate = [sys.executable, "-m", "quartstack", "migrate"]
            subprocess.run(migrate, env={**os.environ, **env}, check=True, timeout=120)
            with ServiceProcess(env) as process:
                process.wait_live().wait_started()
                yield process, issued, tmp_path_factory.mktemp("fuzz")
        finally:
            postgres.drop()
            mysql.drop()


def test_schemathesis_finds_nothing(service):
    process, issued, workdir = service
    st = shutil.which("st") or shutil.which("schemathesis")
    assert st, "the fuzz env installs schemathesis"
    cassette = Path(workdir) / "cassette.yaml"
    result = subprocess.run(
        [
            st,
            "--config-file",
            str(Path(__file__).with_name("schemathesis.toml")),
            "run",
            f"{process.url}/openapi.json",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--generation-deterministic",
            "--request-timeout",
            "15",
            "--report",
            "vcr",
            "--report-vcr-path",
            str(cassette),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=workdir,
    )
    (Path(workdir) / "schemathesis.log").write_text(result.stdout)
    failures = result.stdout.partition("FAILURES")[2] or result.stdout
    assert result.returncode == 0, failures[:4000] + "\n...\n" + result.stdout[-1500:]
    print(result.stdout[-1500:])  # the summary, in the CI log
    recorded = cassette.read_text()
    assert f"/examples/vault/secret/{SECRET_NAME}'" in recorded or (
        f"/examples/vault/secret/{SECRET_NAME}\n" in recorded
    ), "no generated request read the Vault secret: the leak check saw nothing"
    leaked = [value for value in issued if value and value in recorded]
    assert not leaked, "a secret issued by the test Vault appeared in a response"
