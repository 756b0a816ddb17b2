"""Dedicated databases and users for a test run on the machine's SQL servers.

PostgreSQL and MariaDB are the machine's real servers (a unique database and
user per run, dropped afterwards). The machine's PostgreSQL trusts every local
login, so tests that need a password to matter (credential rotation) run a
private PostgreSQL cluster with SCRAM authentication. MongoDB: tests/support/mongo.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pymysql

from tests.support.leftovers import private_dir, stale, stale_dirs, sweep, unique_name
from tests.support.net import free_port, wait_for_port


@dataclass
class Database:
    host: str
    port: int
    user: str
    password: str
    database: str

    def secret(self) -> dict[str, str]:
        return {"user": self.user, "password": self.password, "database": self.database}


def _psql(
    sql: str,
    port: int = 5432,
    user: str = "postgres",
    db: str = "postgres",
    host: str = "127.0.0.1",
    password: str | None = None,
) -> str:
    env = {**os.environ, "PGPASSWORD": password} if password else None
    return subprocess.run(
        [
            "psql",
            "-h",
            host,
            "-p",
            str(port),
            "-U",
            user,
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-tAc",
            sql,
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()


class PostgresDatabase:
    """A unique role and database on a PostgreSQL server (the machine's by default)."""

    def __init__(
        self, port: int = 5432, admin_password: str | None = None, name: str | None = None
    ) -> None:
        name = name or unique_name()
        self.admin_password = admin_password
        self.db = Database("127.0.0.1", port, name, "pw-" + uuid.uuid4().hex, name)

    def sql(self, statement: str, db: str = "postgres") -> str:
        return _psql(statement, port=self.db.port, db=db, password=self.admin_password)

    def create(self) -> Database:
        self.sql(f"CREATE ROLE {self.db.user} LOGIN PASSWORD '{self.db.password}'")
        self.sql(f"CREATE DATABASE {self.db.database} OWNER {self.db.user}")
        return self.db

    def change_password(self, password: str) -> None:
        self.sql(f"ALTER ROLE {self.db.user} PASSWORD '{password}'")
        self.db.password = password

    def terminate_connections(self) -> None:
        self.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE usename = '{self.db.user}'"
        )

    def connection_count(self) -> int:
        return int(
            self.sql(f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{self.db.user}'")
        )

    def set_connection_limit(self, limit: int) -> None:
        """The server refuses the role's connection number ``limit + 1`` (-1: no limit)."""
        self.sql(f"ALTER ROLE {self.db.user} CONNECTION LIMIT {limit}")

    def drop(self) -> None:
        self.terminate_connections()
        self.sql(f"DROP DATABASE IF EXISTS {self.db.database}")
        self.sql(f"DROP ROLE IF EXISTS {self.db.user}")


class PrivatePostgres:
    """A PostgreSQL cluster of our own with SCRAM auth, run as the postgres OS user."""

    def __init__(self, directory: Path | None = None) -> None:
        self.port = free_port()
        self.dir = directory or private_dir("pg")  # swept by its name if a run is interrupted
        self.password = "admin-" + uuid.uuid4().hex
        self.bin = Path(sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1])

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, text=True
        )

    def start(self) -> PrivatePostgres:
        shutil.chown(self.dir, "postgres", "postgres")
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password)
        shutil.chown(pwfile, "postgres", "postgres")
        data = self.dir / "data"
        self._as_postgres(
            str(self.bin / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
        )
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(self.dir / "log"),
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
            "start",
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.dir / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


def _mysql(*statements: str, port: int = 3306) -> list[tuple[object, ...]]:
    """Run ``statements`` as root; the rows of the last one."""
    connection = pymysql.connect(
        host="127.0.0.1", port=port, user="root", password="", autocommit=True
    )
    try:
        rows: list[tuple[object, ...]] = []
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
                rows = list(cursor.fetchall())
        return rows
    finally:
        connection.close()


class MySQLDatabase:
    """A unique user and database on the machine's MariaDB."""

    def __init__(self, port: int = 3306, name: str | None = None) -> None:
        name = name or unique_name()
        self.db = Database("127.0.0.1", port, name, "pw-" + uuid.uuid4().hex, name)

    def sql(self, *statements: str) -> list[tuple[object, ...]]:
        return _mysql(*statements, port=self.db.port)

    def _accounts(self) -> list[str]:
        return [f"'{self.db.user}'@'{host}'" for host in ("%", "localhost", "127.0.0.1")]

    def create(self) -> Database:
        statements = [f"CREATE DATABASE {self.db.database}"]
        for account in self._accounts():
            statements += [
                f"CREATE USER {account} IDENTIFIED BY '{self.db.password}'",
                f"GRANT ALL ON {self.db.database}.* TO {account}",
            ]
        self.sql(*statements)
        return self.db

    def change_password(self, password: str) -> None:
        self.sql(*[f"ALTER USER {a} IDENTIFIED BY '{password}'" for a in self._accounts()])
        self.db.password = password

    def set_connection_limit(self, limit: int) -> None:
        """The server refuses the user's connection number ``limit + 1`` (0: no limit)."""
        self.sql(*[f"ALTER USER {a} WITH MAX_USER_CONNECTIONS {limit}" for a in self._accounts()])

    def connection_ids(self) -> list[int]:
        rows = self.sql(
            f"SELECT id FROM information_schema.processlist WHERE user = '{self.db.user}'"
        )
        return [int(str(row[0])) for row in rows]

    def terminate_connections(self) -> None:
        ids = self.connection_ids()
        if ids:
            self.sql(*[f"KILL {i}" for i in ids])

    def drop(self) -> None:
        self.terminate_connections()
        self.sql(
            f"DROP DATABASE IF EXISTS {self.db.database}",
            *[f"DROP USER IF EXISTS {a}" for a in self._accounts()],
        )


def sweep_database_leftovers() -> list[str]:
    """What interrupted runs left: roles, users and databases on the machine's
    PostgreSQL and MariaDB, and private PostgreSQL clusters (daemons, so an interrupted
    run leaves them running). Only suite names older than an hour (tests/support/leftovers.py)."""
    pattern = "'qs\\_test\\_%'"
    postgres = _psql(
        f"SELECT rolname FROM pg_roles WHERE rolname LIKE {pattern} UNION "
        f"SELECT datname FROM pg_database WHERE datname LIKE {pattern}"
    ).split()
    mysql = _mysql(
        f"SELECT user FROM mysql.user WHERE user LIKE {pattern} UNION "
        f"SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE {pattern}"
    )
    return [
        *sweep("PostgreSQL role", stale(postgres), lambda n: PostgresDatabase(name=n).drop()),
        *sweep(
            "MariaDB user", stale(str(r[0]) for r in mysql), lambda n: MySQLDatabase(name=n).drop()
        ),
        *sweep(
            "PostgreSQL cluster",
            [str(d) for d in stale_dirs("pg")],
            lambda d: PrivatePostgres(Path(d)).stop(),
        ),
    ]
