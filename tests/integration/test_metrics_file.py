"""Integration tests for reference.metrics: a real file shared by real processes, and the CLI."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from reference.counters import SEGMENT_SIZE, Outcome, Snapshot
from reference.errors import BackgroundError, MetricsFileError
from reference.metrics import (
    HEADER_SIZE,
    LAYOUT_VERSION,
    MAGIC,
    METRICS,
    format_prometheus,
    main,
    metrics_path_for,
    open_metrics,
    read_all,
    worker_states,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from multiprocessing.synchronize import Barrier

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BOUND = 30.0  # generous: CI machines under load


@pytest.fixture
def workdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="rm-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=BOUND * 2,
        check=False,
    )


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("METRICS_PATH", "BACKGROUND_FORKS")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "reference.metrics", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environ,
        timeout=BOUND * 2,
        check=False,
    )


# --- children (module level so the 'spawn' context can import them) ---------------------


def _writer_child(path: str, worker: int, total: int, barrier: Barrier) -> None:
    barrier.wait(timeout=BOUND)
    segment = open_metrics(path, worker, total)
    c = segment.counters
    # A per-worker signature: worker w records w successes, one failure, w skips.
    for i in range(worker):
        c.started(1_700_000_000.0 + worker)
        c.finished(Outcome.SUCCESS, 10.0 * worker + i)
    c.started(1_700_000_100.0 + worker)
    c.finished(Outcome.FAILURE, 0.5)
    for _ in range(worker):
        c.skipped()
    c.set_capacity(worker * 3)
    segment.close()


def _expected(worker: int) -> Snapshot:
    return Snapshot(
        worker=worker,
        total_runs=worker + 1,
        total_successes=worker,
        total_failures=1,
        total_timeouts=0,
        total_skips=worker,
        active_jobs=0,
        last_run_at=1_700_000_100.0 + worker,
        last_duration_ms=0.5,
        free_slots=worker * 3,
    )


def _grower_child(paths: list[str]) -> None:
    for path in paths:
        small = open_metrics(path, 1, 2)
        small.counters.set_capacity(3)
        big = open_metrics(path, 5, 8)
        big.counters.set_capacity(7)
        small.close()
        big.close()


_READER_CODE = """
import json, sys, time
from reference.errors import MetricsFileError
from reference.metrics import read_all
reads = 0
deadline = time.monotonic() + float(sys.argv[1])
for path in sys.argv[2:]:
    while True:
        try:
            snaps = read_all(8, path)
        except MetricsFileError as exc:
            if "does not exist" not in str(exc):
                raise
            snaps = None
        if snaps is not None:
            reads += 1
            assert [s.worker for s in snaps] == list(range(1, 9)), snaps
            assert snaps[0].free_slots in (0, 3), snaps[0]
            assert snaps[4].free_slots in (0, 7), snaps[4]
            assert all(s.total_runs == 0 for s in snaps), snaps
            if snaps[4].free_slots == 7:
                break
        if time.monotonic() > deadline:
            raise SystemExit("reader timed out on " + path)
print(json.dumps({"reads": reads}))
"""


# --- file creation and sharing ---------------------------------------------------------


def test_concurrent_first_open_makes_one_file_and_readers_see_exact_values(
    workdir: str,
) -> None:
    path = os.path.join(workdir, "metrics.bin")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_writer_child, args=(path, w, 4, barrier)) for w in (1, 2, 3, 4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=BOUND * 2)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]

    assert os.listdir(workdir) == ["metrics.bin"]  # no temp files left behind
    data = Path(path).read_bytes()
    assert len(data) == HEADER_SIZE + 4 * SEGMENT_SIZE
    assert struct.unpack_from("<8sIII", data) == (MAGIC, LAYOUT_VERSION, SEGMENT_SIZE, 4)

    # A reader in yet another process, with no lock and no server.
    out = _run_python(
        "import dataclasses, json, sys\n"
        "from reference.metrics import read_all\n"
        "print(json.dumps([dataclasses.asdict(s) for s in read_all(4, sys.argv[1])]))",
        path,
    )
    assert out.returncode == 0, out.stderr
    assert [Snapshot(**d) for d in json.loads(out.stdout)] == [_expected(w) for w in (1, 2, 3, 4)]


def test_reader_racing_a_growing_file_never_crashes(workdir: str) -> None:
    paths = [os.path.join(workdir, f"m{i}.bin") for i in range(40)]
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER_CODE, str(BOUND), *paths],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ctx = multiprocessing.get_context("spawn")
    grower = ctx.Process(target=_grower_child, args=(paths,))
    grower.start()
    grower.join(timeout=BOUND * 2)
    stdout, stderr = reader.communicate(timeout=BOUND * 2)
    assert grower.exitcode == 0
    assert reader.returncode == 0, stderr
    assert json.loads(stdout)["reads"] >= len(paths)
    for path in paths:
        assert os.path.getsize(path) == HEADER_SIZE + 8 * SEGMENT_SIZE


def test_open_grows_but_never_shrinks(workdir: str) -> None:
    path = os.path.join(workdir, "m.bin")
    with open_metrics(path, 3, 8) as seg:
        seg.counters.skipped()
    with open_metrics(path, 1, 2) as seg:
        seg.counters.started(5.0)
    assert os.path.getsize(path) == HEADER_SIZE + 8 * SEGMENT_SIZE
    snaps = read_all(8, path)
    assert (snaps[0].total_runs, snaps[2].total_skips) == (1, 1)


def test_reopening_a_segment_resets_only_that_segment(workdir: str) -> None:
    path = os.path.join(workdir, "m.bin")
    with open_metrics(path, 1, 2) as one, open_metrics(path, 2, 2) as two:
        one.counters.skipped()
        two.counters.skipped()
    with open_metrics(path, 2, 2):
        pass
    assert [s.total_skips for s in read_all(2, path)] == [1, 0]


def test_short_file_reads_missing_segments_as_zero(workdir: str) -> None:
    path = os.path.join(workdir, "m.bin")
    with open_metrics(path, 2, 2) as seg:
        seg.counters.started(9.0)
    snaps = read_all(5, path)
    assert [s.worker for s in snaps] == [1, 2, 3, 4, 5]
    assert snaps[1].total_runs == 1
    assert snaps[2:] == [Snapshot.unpack(w, bytes(SEGMENT_SIZE)) for w in (3, 4, 5)]


def test_header_claiming_more_than_the_file_holds_does_not_crash(workdir: str) -> None:
    path = os.path.join(workdir, "m.bin")
    with open_metrics(path, 1, 2) as seg:
        seg.counters.skipped()
    with open(path, "r+b") as f:
        f.seek(16)
        f.write(struct.pack("<I", 8))
    snaps = read_all(8, path)
    assert [s.total_skips for s in snaps] == [1] + [0] * 7


def test_segment_is_shared_live_with_readers(workdir: str) -> None:
    path = os.path.join(workdir, "m.bin")
    with open_metrics(path, 1, 1) as seg:
        seg.counters.started(3.0)
        assert read_all(1, path)[0].active_jobs == 1
        seg.counters.finished(Outcome.TIMEOUT, 30_000.0)
        assert read_all(1, path)[0].total_timeouts == 1


def test_close_is_idempotent_and_repr_tracks_state(workdir: str) -> None:
    path = os.path.join(workdir, "m.bin")
    seg = open_metrics(path, 2, 3)
    assert "worker=2" in repr(seg)
    assert "open" in repr(seg)
    assert not seg.closed
    seg.close()
    seg.close()
    assert seg.closed
    assert "closed" in repr(seg)


def test_wrong_magic_or_version_is_a_clear_error(workdir: str) -> None:
    alien = os.path.join(workdir, "alien.bin")
    Path(alien).write_bytes(b"NOTMETRICS" + bytes(200))
    with pytest.raises(MetricsFileError, match="not a metrics file"):
        open_metrics(alien, 1, 1)
    with pytest.raises(MetricsFileError, match="not a metrics file"):
        read_all(1, alien)

    old = os.path.join(workdir, "old.bin")
    Path(old).write_bytes(struct.pack("<8sIII", MAGIC, 99, SEGMENT_SIZE, 1) + bytes(200))
    with pytest.raises(MetricsFileError, match="layout version 99"):
        open_metrics(old, 1, 1)
    assert Path(old).read_bytes()[8:12] == struct.pack("<I", 99)  # left untouched

    tiny = os.path.join(workdir, "tiny.bin")
    Path(tiny).write_bytes(b"RE")
    with pytest.raises(MetricsFileError, match="truncated"):
        read_all(1, tiny)


def test_missing_file_and_unwritable_place_raise_metrics_file_error(workdir: str) -> None:
    with pytest.raises(MetricsFileError, match="does not exist") as info:
        read_all(2, os.path.join(workdir, "nope.bin"))
    assert isinstance(info.value, BackgroundError)
    assert isinstance(info.value, ValueError)
    with pytest.raises(MetricsFileError, match="cannot open"):
        open_metrics(os.path.join(workdir, "no", "such", "dir.bin"), 1, 1)


@pytest.mark.parametrize(("worker", "total"), [(0, 2), (3, 2), (1, 0), (1, 10**6)])
def test_bad_indexes_are_rejected(workdir: str, worker: int, total: int) -> None:
    with pytest.raises(ValueError, match="must be an int"):
        open_metrics(os.path.join(workdir, "m.bin"), worker, total)
    assert os.listdir(workdir) == []


def test_default_path_is_beside_the_database() -> None:
    assert metrics_path_for("tmp/queue.db") == "tmp/queue.db.metrics"
    assert metrics_path_for("/srv/a/q.db") != metrics_path_for("/srv/b/q.db")


def test_a_database_url_gets_its_own_file_in_the_temp_dir() -> None:
    one = metrics_path_for("postgresql://db.example/app")
    assert os.path.dirname(one) == tempfile.gettempdir()
    assert one == metrics_path_for("postgresql://db.example/app")
    assert one != metrics_path_for("postgresql://db.example/other")


# --- CLI --------------------------------------------------------------------------------


@pytest.fixture
def populated(workdir: str) -> str:
    path = os.path.join(workdir, "m.bin")
    with open_metrics(path, 1, 3) as one, open_metrics(path, 3, 3) as three:
        one.counters.started(1_700_000_000.0)
        one.counters.finished(Outcome.SUCCESS, 1500.0)
        one.counters.started(1_700_000_060.0)  # still running
        three.counters.skipped()
        three.counters.set_capacity(2)
    return path


def test_cli_missing_file_prints_one_line_and_exits_1(workdir: str) -> None:
    out = _run_cli("--metrics", os.path.join(workdir, "absent.bin"))
    assert out.returncode == 1
    assert out.stdout == ""
    assert len(out.stderr.splitlines()) == 1
    assert "does not exist" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_short_file_prints_one_line_and_exits_1(populated: str) -> None:
    out = _run_cli("--workers", "5", env={"METRICS_PATH": populated})
    assert out.returncode == 1
    assert len(out.stderr.splitlines()) == 1
    assert "5 requested" in out.stderr


@pytest.mark.parametrize(
    "argv",
    [["--json", "--prometheus"], ["--workers", "x"], ["--workers", "0"], ["--bogus"]],
)
def test_cli_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv, environ={}) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "error" in err


def test_cli_bad_env_workers_exits_2(populated: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], environ={"METRICS_PATH": populated, "BACKGROUND_FORKS": "many"}) == 2
    assert "BACKGROUND_FORKS" in capsys.readouterr().err


def test_cli_table_has_a_row_per_worker_and_totals(
    populated: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--metrics", populated], environ={}) == 0
    lines = capsys.readouterr().out.splitlines()
    # The columns are the JSON keys, in the file's order (one name for one value).
    # `state` is the workers table's word; an explicit file names no database: unknown.
    assert lines[0].split() == ["worker", "state", *(m.field for m in METRICS)]
    assert [line.split()[0] for line in lines[1:-1]] == ["1", "2", "3", "total"]
    assert lines[1].split() == [
        "1",
        "-",
        "2",
        "1",
        "0",
        "0",
        "0",
        "1",
        "0",
        "2023-11-14T22:14:20+00:00",
        "1500.0",
    ]
    assert lines[2].split()[-2:] == ["-", "-"]
    assert lines[4].split()[:9] == ["total", "-", "2", "1", "0", "0", "1", "1", "2"]
    # Aligned: every row is as wide as the header's last column end.
    assert len({len(line) for line in lines[:-1]}) == 1
    # The counters' unit is said where they are shown.
    assert "runs (attempts), not jobs" in lines[-1]


def test_cli_env_fallbacks_choose_path_and_worker_count(
    populated: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"METRICS_PATH": populated, "BACKGROUND_FORKS": "2"}
    assert main(["--json"], environ=env) == 0
    assert [d["worker"] for d in json.loads(capsys.readouterr().out)] == [1, 2]
    # argv wins over the environment.
    assert main(["--json", "--workers", "3"], environ=env) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3


def test_cli_json_shape(populated: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--metrics", populated, "--json"], environ={}) == 0
    data = json.loads(capsys.readouterr().out)
    assert isinstance(data, list)
    assert [d["worker"] for d in data] == [1, 2, 3]
    expected_keys = {
        "worker",
        "state",
        "total_runs",
        "total_successes",
        "total_failures",
        "total_timeouts",
        "total_skips",
        "active_jobs",
        "last_run_at",
        "last_duration_ms",
        "free_slots",
        "last_run_iso",
    }
    assert all(set(d) == expected_keys for d in data)
    assert data[0]["total_runs"] == 2
    assert data[0]["active_jobs"] == 1
    assert data[0]["last_run_iso"] == "2023-11-14T22:14:20+00:00"
    assert data[1]["last_run_iso"] is None
    assert (data[2]["total_skips"], data[2]["free_slots"]) == (1, 2)
    assert set(expected_keys) - {"worker", "state", "last_run_iso"} == {m.field for m in METRICS}
    assert all(d["state"] is None for d in data)  # no database named: unknown


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_VALUE = r"(?:[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|NaN|[-+]?Inf)"
SAMPLE = re.compile(rf"^(?P<name>{_NAME})(?:\{{{_LABEL}(?:,{_LABEL})*,?\}})? {_VALUE}(?: -?\d+)?$")
HELP = re.compile(rf"^# HELP (?P<name>{_NAME}) \S.*$")
TYPE = re.compile(rf"^# TYPE (?P<name>{_NAME}) (?:counter|gauge|histogram|summary|untyped)$")


def test_cli_prometheus_exposition_grammar(
    populated: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--prometheus"], environ={"METRICS_PATH": populated}) == 0
    text = capsys.readouterr().out
    assert text.endswith("\n")
    typed: dict[str, str] = {}
    samples: dict[str, str] = {}
    helped: set[str] = set()
    for line in text.splitlines():
        if m := HELP.match(line):
            helped.add(m["name"])
        elif m := TYPE.match(line):
            assert m["name"] not in typed, "TYPE given twice"
            typed[m["name"]] = line.split()[-1]
        else:
            m = SAMPLE.match(line)
            assert m is not None, f"not an exposition line: {line!r}"
            assert m["name"] in typed, "sample before its TYPE line"
            key = line.rsplit(" ", 1)[0]
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = line.rsplit(" ", 1)[1]
    assert helped == set(typed)
    assert typed["reference_runs_total"] == "counter"
    assert typed["reference_active_jobs"] == "gauge"
    assert typed["reference_last_run_timestamp_seconds"] == "gauge"
    assert typed["reference_last_duration_seconds"] == "gauge"
    assert all(t == "counter" for n, t in typed.items() if n.endswith("_total"))
    assert samples['reference_runs_total{worker="1"}'] == "2"
    assert samples['reference_runs_total{worker="2"}'] == "0"
    assert samples['reference_active_jobs{worker="1"}'] == "1"
    assert samples['reference_free_slots{worker="3"}'] == "2"
    assert float(samples['reference_last_duration_seconds{worker="1"}']) == 1.5
    assert float(samples['reference_last_run_timestamp_seconds{worker="1"}']) == 1.70000006e9
    assert samples['reference_skips_total{worker="3"}'] == "1"
    assert set(typed) == {m.prometheus for m in METRICS}


def test_prometheus_names_are_the_json_keys_in_prometheus_form() -> None:
    """`total_X` -> `reference_X_total`; a unit suffix becomes the base unit; nothing else."""
    for m in METRICS:
        stem = m.field.removeprefix("total_").removesuffix("_at").removesuffix("_ms")
        assert m.prometheus.startswith(f"reference_{stem}"), m
        assert m.prometheus.endswith("_total") == (m.kind == "counter"), m
    counters = [m for m in METRICS if m.kind == "counter"]
    # Every counter says what it counts: runs are attempts, not jobs.
    assert all("attempt" in m.help or "Scheduled runs" in m.help for m in counters)


def test_cli_without_workers_shows_every_allocated_segment(
    populated: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--metrics", populated, "--json"], environ={}) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3


def test_cli_runs_as_a_module(populated: str) -> None:
    out = _run_cli("--metrics", populated, "--prometheus")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("# HELP reference_runs_total ")


def test_prometheus_states_are_an_enum_per_known_worker(populated: str) -> None:
    text = format_prometheus(read_all(3, populated), {1: "gone", 3: "live"})
    states = [line for line in text.splitlines() if line.startswith("reference_state{")]
    assert all(SAMPLE.match(line) for line in states)
    assert states == [
        'reference_state{worker="1",state="live"} 0',
        'reference_state{worker="1",state="stopped"} 0',
        'reference_state{worker="1",state="gone"} 1',
        'reference_state{worker="3",state="live"} 1',
        'reference_state{worker="3",state="stopped"} 0',
        'reference_state{worker="3",state="gone"} 0',
    ]
    assert "reference_state" not in format_prometheus(read_all(3, populated))


def test_worker_states_without_a_queue_database_are_unknown(workdir: str) -> None:
    missing = os.path.join(workdir, "absent.db")
    assert worker_states(missing, now=0.0, lease=60.0) == {}
    assert not os.path.exists(missing)  # never created
    junk = os.path.join(workdir, "junk.db")
    Path(junk).write_text("not sqlite")
    assert worker_states(junk, now=0.0, lease=60.0) == {}
    assert Path(junk).read_text() == "not sqlite"


def test_cli_into_a_closed_pipe_prints_no_traceback(populated: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "reference.metrics", "--metrics", populated, "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()  # like `| head` that has read enough (long before the child writes)
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=BOUND) == 1
    assert "Traceback" not in err
    assert "BrokenPipe" not in err
