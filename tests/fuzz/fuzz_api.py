"""The ``fuzz`` gate (``tox -e fuzz``): schemathesis against a real ``quartstack serve``
with every backend configured as the suite does (the machine's PostgreSQL and MariaDB
with an account of its own, RabbitMQ with a vhost and user of its own, a private
``redis-server``, nx-27017 for MongoDB, the Vault test server holding every
credential): generated requests write keys and queues, never into shared ones. It
fails on any 5xx, any answer that does not match the documented status, schema or
content type, and any secret the test Vault issued appearing in a response.
Deterministic (``--generation-deterministic``) and bounded per operation. Its last
phase is stateful: it chains calls over the document's OpenAPI links (sign up, then
read and erase that user; write a key, then read and delete it...).

Not named ``test_*.py``: it needs the ``schemathesis`` CLI, which only the fuzz env
installs, so the default suite does not collect it.
"""

from __future__ import annotations

import os
import re
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


@pytest.mark.timeout(660)  # the run has its own deadline below; this covers the setup
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
            "examples,coverage,fuzzing,stateful",
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
        timeout=600,
        cwd=workdir,
    )
    (Path(workdir) / "schemathesis.log").write_text(result.stdout)
    failures = result.stdout.partition("FAILURES")[2] or result.stdout
    assert result.returncode == 0, failures[:4000] + "\n...\n" + result.stdout[-1500:]
    phases = _PHASE_LINES.findall(result.stdout)  # e.g. "Stateful (in 8.1s)", "API Links: ..."
    print("\n".join(phases), result.stdout[-1500:], sep="\n")  # in the CI log
    recorded = cassette.read_text()
    assert f"/examples/vault/secret/{SECRET_NAME}'" in recorded or (
        f"/examples/vault/secret/{SECRET_NAME}\n" in recorded
    ), "no generated request read the Vault secret: the leak check saw nothing"
    leaked = [value for value in issued if value and value in recorded]
    assert not leaked, "a secret issued by the test Vault appeared in a response"
    _assert_links_were_followed(result.stdout, recorded)


_PHASE_LINES = re.compile(r"^.*(?:\(in [\d.ms ]+\)|Scenarios:|API Links:).*$", re.MULTILINE)
_LINKS_LINE = re.compile(r"API Links:\s+(\d+) covered / (\d+) selected")
_INTERACTION = re.compile(
    r"^  phase:\n    name: '(?P<phase>\w+)'.*?^    uri: '(?P<uri>[^']*)'\n"
    r"    method: '(?P<method>\w+)'.*?^    status:\n      code: '(?P<status>\d+)'",
    re.MULTILINE | re.DOTALL,
)
_USER = re.compile(r"/users/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _assert_links_were_followed(summary: str, recorded: str) -> None:
    """The stateful phase ran over the document's links: the summary counts covered
    links, and users that only a link can name (a random id is never a signed-up user)
    were read (200) and erased (204) with the id a sign-up returned."""
    covered = _LINKS_LINE.search(summary)
    assert covered, "the stateful phase did not run: no 'API Links' line in the summary"
    assert int(covered[1]) >= 5, covered[0]
    linked = {
        (m["method"], m["status"])
        for m in _INTERACTION.finditer(recorded)
        if m["phase"] == "stateful" and _USER.search(m["uri"])
    }
    assert {("GET", "200"), ("DELETE", "204")} <= linked, linked
