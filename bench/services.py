"""The machine's Redis and PostgreSQL, as the broker-backed peers (arq, rq, procrastinate) use them.

Owns where the services are (`BENCH_REDIS_URL`, `BENCH_PG_DSN`), whether they answer, how a
run gets an empty queue (a dedicated Redis database emptied with FLUSHDB; a PostgreSQL
database dropped and created again) and what each keeps on disk. Imports redis and psycopg
only inside functions, so `python -m bench` runs without them.

The benchmark empties Redis database 15 and drops the PostgreSQL database
`bench_procrastinate`; point the two variables elsewhere if those hold anything of yours.
"""

from __future__ import annotations

import contextlib
import os
import socket
from urllib.parse import urlsplit

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
PG_DATABASE = "bench_procrastinate"
# Connect as `postgres` over the local socket; the maintenance database creates ours.
PG_DSN = os.environ.get(
    "BENCH_PG_DSN", f"postgresql://postgres@/{PG_DATABASE}?host=/var/run/postgresql"
)
PG_ADMIN_DSN = os.environ.get(
    "BENCH_PG_ADMIN_DSN", "postgresql://postgres@/postgres?host=/var/run/postgresql"
)


def port_open(host: str, port: int) -> bool:
    """True if something accepts a TCP connection on host:port within 0.2 s."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
        return True
    return False


def redis_down() -> str | None:
    """None if Redis answers PING at REDIS_URL, else why not."""
    try:
        import redis
    except ImportError:
        return "the redis client is not installed (make bench installs the `bench` extra)"
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        where = urlsplit(REDIS_URL).netloc
        return f"no Redis at {where} ({exc})"
    return None


def redis_reset() -> None:
    """Empty the benchmark's Redis database (only that one: FLUSHDB, not FLUSHALL)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    finally:
        client.close()


def redis_durability() -> str:
    """What this Redis keeps on disk, read from its configuration."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        version = client.info("server")["redis_version"]
        config = {**client.config_get("appendonly"), **client.config_get("appendfsync")}
        config.update(client.config_get("save"))
    finally:
        client.close()
    if config.get("appendonly") == "yes":
        kept = f"appendonly=yes, appendfsync={config.get('appendfsync')}"
    else:
        kept = "appendonly=no"
    save = config.get("save") or ""
    kept += f", save={save!r}"
    if config.get("appendonly") != "yes" and not save:
        kept += " (nothing on disk: a Redis restart loses every queued job)"
    elif config.get("appendonly") != "yes":
        kept += " (snapshots only: a crash loses what came after the last one)"
    return f"Redis {version}, {kept}"


def pg_down() -> str | None:
    """None if PostgreSQL accepts a connection as the admin DSN, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (make bench installs the `bench` extra)"
    try:
        psycopg.connect(PG_ADMIN_DSN, connect_timeout=2).close()
    except psycopg.Error as exc:
        return f"no PostgreSQL at {PG_ADMIN_DSN} ({str(exc).strip()})"
    return None


def pg_recreate(schema_sql: str) -> None:
    """Drop and create the benchmark database, then run `schema_sql` in it."""
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {PG_DATABASE}")
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(schema_sql)  # a trusted, shipped schema file


def pg_durability() -> str:
    """The commit durability this PostgreSQL runs with."""
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN) as conn:
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]
            for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method")
        }
    version = settings.pop("server_version").split()[0]
    shown = ", ".join(f"{k}={v}" for k, v in settings.items())
    return f"PostgreSQL {version}, {shown}"
