"""`resolve_worker` / `resolve_queue`: argv > environment > defaults, and clear errors."""

from __future__ import annotations

import os

import pytest

from reference.allocator import DEFAULT_TRIM_THRESHOLD
from reference.config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DB_PATH,
    DEFAULT_LEASE,
    DEFAULT_SOCKET_DIR,
    DEFAULT_WORKERS,
    POLL_INTERVAL,
    default_metrics_path,
    resolve_queue,
    resolve_worker,
)
from reference.errors import ConfigError
from reference.supervisor import DEFAULT_STOP_GRACE

FULL_ENV = {
    "SCHEDULE_PATH": "/env/schedule.yml",
    "BACKGROUND_FORKS": "4",
    "LIMIT_JOB_COUNT": "7",
    "QUEUE_DB_PATH": "/env/q.db",
    "QUEUE_SOCKET_DIR": "/env/sock",
    "METRICS_PATH": "/env/metrics.bin",
}


def test_defaults_with_an_empty_environment() -> None:
    s = resolve_worker(environ={})
    assert s.schedule_path is None
    assert s.workers == DEFAULT_WORKERS == 1
    assert s.concurrency == DEFAULT_CONCURRENCY == 2
    assert s.queue.db_path == DEFAULT_DB_PATH == os.path.join("tmp", "queue.db")
    assert s.queue.socket_dir == DEFAULT_SOCKET_DIR
    assert s.queue.total_workers == 1
    assert s.queue.mmap is True
    assert s.metrics_path == default_metrics_path() == os.path.join("tmp", "queue.db.metrics")
    assert s.imports == ()
    assert s.worker_index is None
    assert s.isolated == frozenset()
    assert s.poll_interval == POLL_INTERVAL == 5.0
    assert s.lease == DEFAULT_LEASE


def test_environment_over_defaults() -> None:
    s = resolve_worker(environ=FULL_ENV)
    assert s.schedule_path == "/env/schedule.yml"
    assert s.workers == 4
    assert s.queue.total_workers == 4
    assert s.concurrency == 7
    assert s.queue.db_path == "/env/q.db"
    assert s.queue.socket_dir == "/env/sock"
    assert s.metrics_path == "/env/metrics.bin"


def test_argv_over_environment_for_every_setting() -> None:
    s = resolve_worker(
        schedule="/cli/s.yml",
        workers=2,
        concurrency=3,
        db="/cli/q.db",
        socket_dir="/cli/sock",
        metrics="/cli/m.bin",
        imports=["app.jobs", "app.more"],
        worker_index=2,
        environ=FULL_ENV,
    )
    assert s.schedule_path == "/cli/s.yml"
    assert s.workers == 2
    assert s.concurrency == 3
    assert s.queue.db_path == "/cli/q.db"
    assert s.queue.socket_dir == "/cli/sock"
    assert s.metrics_path == "/cli/m.bin"
    assert s.imports == ("app.jobs", "app.more")
    assert s.worker_index == 2


def test_empty_environment_values_count_as_unset() -> None:
    env = dict.fromkeys(FULL_ENV, "")
    s = resolve_worker(environ=env)
    assert s.schedule_path is None
    assert s.workers == 1
    assert s.concurrency == 2
    assert s.queue.db_path == DEFAULT_DB_PATH
    assert s.metrics_path == default_metrics_path()


@pytest.mark.parametrize("value", ["off", "OFF", " none ", "0"])
def test_metrics_off(value: str) -> None:
    assert resolve_worker(environ={"METRICS_PATH": value}).metrics_path is None
    assert resolve_worker(metrics=value, environ={}).metrics_path is None


def test_metrics_argv_off_beats_environment_path() -> None:
    assert resolve_worker(metrics="off", environ=FULL_ENV).metrics_path is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", frozenset()), ("1", {1}), ("1,3", {1, 3}), (" 2 , 4 ,", {2, 4}), ("3,3", {3})],
)
def test_isolation_forks_parsing(raw: str, expected: set[int]) -> None:
    s = resolve_worker(environ={"ISOLATION_FORKS": raw, "BACKGROUND_FORKS": "4"})
    assert s.isolated == frozenset(expected)
    assert s.queue_workers() == [i for i in (1, 2, 3, 4) if i not in expected]
    assert all(s.serves_queue(i) == (i not in expected) for i in range(1, 5))


@pytest.mark.parametrize("raw", ["x", "1,two", "0", "-1", "1.5"])
def test_bad_isolation_forks_names_the_key(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_worker(environ={"ISOLATION_FORKS": raw})
    assert info.value.key == "ISOLATION_FORKS"
    assert "ISOLATION_FORKS" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "environ", "key"),
    [
        ({"workers": 0}, {}, "workers"),
        ({}, {"BACKGROUND_FORKS": "many"}, "workers"),
        ({}, {"BACKGROUND_FORKS": "0"}, "workers"),
        ({"concurrency": 0}, {}, "concurrency"),
        ({}, {"LIMIT_JOB_COUNT": "-2"}, "concurrency"),
        ({}, {"LIMIT_JOB_COUNT": "2.5"}, "concurrency"),
        ({"worker_index": 3, "workers": 2}, {}, "worker-index"),
        ({"worker_index": 0}, {}, "worker-index"),
        ({}, {"QUEUE_POLL_INTERVAL": "0"}, "QUEUE_POLL_INTERVAL"),
        ({}, {"QUEUE_POLL_INTERVAL": "soon"}, "QUEUE_POLL_INTERVAL"),
        ({}, {"QUEUE_LEASE": "-5"}, "QUEUE_LEASE"),
        ({}, {"QUEUE_LEASE": "nan"}, "QUEUE_LEASE"),
        ({}, {"QUEUE_LEASE": "inf"}, "QUEUE_LEASE"),
        ({}, {"QUEUE_POLL_INTERVAL": "inf"}, "QUEUE_POLL_INTERVAL"),
        ({}, {"WORKER_STOP_GRACE": "0"}, "WORKER_STOP_GRACE"),
        ({}, {"WORKER_STOP_GRACE": "inf"}, "WORKER_STOP_GRACE"),
        ({}, {"WORKER_STOP_GRACE": "later"}, "WORKER_STOP_GRACE"),
    ],
)
def test_bad_values_raise_config_error_naming_the_key(
    kwargs: dict[str, object], environ: dict[str, str], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_worker(environ=environ, **kwargs)  # type: ignore[arg-type]
    assert info.value.key == key
    assert repr(key) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_worker_index_is_checked_against_environment_workers() -> None:
    assert resolve_worker(worker_index=4, environ={"BACKGROUND_FORKS": "4"}).worker_index == 4
    with pytest.raises(ConfigError, match="worker-index"):
        resolve_worker(worker_index=5, environ={"BACKGROUND_FORKS": "4"})


def test_poll_and_lease_from_environment() -> None:
    s = resolve_worker(environ={"QUEUE_POLL_INTERVAL": "0.5", "QUEUE_LEASE": "9"})
    assert (s.poll_interval, s.lease) == (0.5, 9.0)


def test_stop_grace_default_and_environment() -> None:
    assert resolve_worker(environ={}).stop_grace == DEFAULT_STOP_GRACE == 300.0
    assert resolve_worker(environ={"WORKER_STOP_GRACE": "2.5"}).stop_grace == 2.5


@pytest.mark.parametrize(("raw", "on"), [("1", True), ("off", False), ("0", False), ("NO", False)])
def test_queue_mmap_switch(raw: str, on: bool) -> None:
    assert (
        resolve_queue(db=None, socket_dir=None, workers=None, environ={"QUEUE_MMAP": raw}).mmap
        is on
    )


def test_resolve_queue_argv_over_environment() -> None:
    q = resolve_queue(db="/a.db", socket_dir=None, workers=3, environ=FULL_ENV)
    assert (q.db_path, q.socket_dir, q.total_workers) == ("/a.db", "/env/sock", 3)
    q = resolve_queue(db=None, socket_dir=None, workers=None, environ=FULL_ENV)
    assert (q.db_path, q.total_workers) == ("/env/q.db", 4)


def test_workers_keep_freed_heap_unless_glibc_is_told_otherwise() -> None:
    assert resolve_worker(environ={}).heap_trim_threshold == DEFAULT_TRIM_THRESHOLD
    # The user's own glibc settings win: the worker then leaves malloc alone.
    assert resolve_worker(environ={"MALLOC_TRIM_THRESHOLD_": "0"}).heap_trim_threshold is None
    tunables = {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=65536"}
    assert resolve_worker(environ=tunables).heap_trim_threshold is None
    other = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert resolve_worker(environ=other).heap_trim_threshold == DEFAULT_TRIM_THRESHOLD


@pytest.mark.parametrize("raw", ["4097", "1" + "0" * 5000])
def test_worker_count_is_bounded(raw: str) -> None:
    """BACKGROUND_FORKS=10**9 built a billion wake-up addresses; 5,000 digits raised."""
    with pytest.raises(ConfigError, match="key 'workers'") as info:
        resolve_worker(environ={"BACKGROUND_FORKS": raw})
    assert len(str(info.value)) < 120
