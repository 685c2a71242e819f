"""Enforce the module boundaries of STYLE 4.4 with the standard library's `ast`.

1. `reference/` never imports `sim`, `tests` or `property_tests`.
2. Inside `reference/`, a module imports only from its own layer or below.
3. Side-effecting stdlib is confined to its adapter, the real clock to `clock.py`, and
   no runtime module draws from the global `random`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "reference"

LAYERS: dict[str, int] = {
    # 0: vocabulary
    "reference.errors": 0,
    "reference.clock": 0,
    "reference.records": 0,
    "reference.options": 0,
    "reference.triggers": 0,
    "reference.sharding": 0,
    "reference.counters": 0,
    "reference.observe": 0,
    # 1: domain
    "reference.job": 1,
    "reference.payload": 1,
    "reference.registry": 1,
    "reference.schedule": 1,
    "reference.store": 1,
    "reference.liveness": 1,
    "reference.transport": 1,
    "reference.health": 1,
    # 2: engine
    "reference.scheduler": 2,
    "reference.row_scheduler": 2,
    "reference.runner": 2,
    "reference.producer": 2,
    "reference.waker": 2,
    "reference.consumer": 2,
    "reference.upkeep": 2,
    # 3: adapters
    "reference.sqlite_store": 3,
    "reference.unix_transport": 3,
    "reference.metrics": 3,
    "reference.offload": 3,
    "reference.allocator": 3,
    "reference.process": 3,
    # 4: composition roots
    "reference.runtime": 4,
    "reference.config": 4,
    "reference.cli": 4,
    "reference.wiring": 4,
    "reference.worker": 4,
    "reference.supervisor": 4,
    "reference.queue": 4,
    "reference.queue.__main__": 4,
}
# The package root re-exports the public surface from layers 0-1 and is exempt.
EXEMPT_MODULES = {"reference"}
# Upward imports that are deliberate, each with its reason.
ALLOWED_UPWARD = {
    # `python -m reference.metrics` is fixed by SPEC; its CLI resolves METRICS_PATH and
    # BACKGROUND_FORKS through config, the one reader of os.environ.
    ("reference.metrics", "reference.config"),
}

CONFINED: dict[str, set[str]] = {
    "sqlite3": {"reference.sqlite_store"},
    "socket": {"reference.unix_transport"},
    "mmap": {"reference.metrics"},
    # allocator: mallopt; process: prctl(PR_SET_PDEATHSIG), so workers die with the supervisor.
    "ctypes": {"reference.allocator", "reference.process"},
    # queue/__init__: one lock serialises the thread-shared producer (sync jobs enqueue).
    "threading": {"reference.offload", "reference.queue"},
    "signal": {"reference.supervisor"},
    "subprocess": {"reference.supervisor"},
    "multiprocessing": {"reference.supervisor"},
}
CLOCK_READS = {
    ("time", "time"),
    ("time", "monotonic"),
    ("time", "monotonic_ns"),
    ("time", "time_ns"),
    ("time", "perf_counter"),
    ("time", "sleep"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
}
# Composition roots may build an OS-seeded `random.Random()` to hand down; nobody may call
# the module-level functions (random.random(), random.choice(), ...).
RANDOM_CONSTRUCTORS = {"Random", "SystemRandom"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def reference_modules() -> list[tuple[str, ast.Module]]:
    return [
        (module_name(p), ast.parse(p.read_text(), str(p))) for p in sorted(PACKAGE.rglob("*.py"))
    ]


def imports_of(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = reference_modules()


def test_every_module_has_a_layer() -> None:
    names = {name for name, _ in MODULES} - EXEMPT_MODULES
    assert names == set(LAYERS), "add new modules to LAYERS (and to STYLE's map)"


@pytest.mark.parametrize(("name", "tree"), MODULES, ids=[n for n, _ in MODULES])
def test_reference_never_imports_sim_or_tests(name: str, tree: ast.Module) -> None:
    bad = {m for m in imports_of(tree) if m.split(".")[0] in ("sim", "tests", "property_tests")}
    assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize(("name", "tree"), MODULES, ids=[n for n, _ in MODULES])
def test_imports_point_down(name: str, tree: ast.Module) -> None:
    if name in EXEMPT_MODULES:
        return
    mine = LAYERS[name]
    for imported in imports_of(tree):
        target = imported if imported in LAYERS else imported.rpartition(".")[0]
        if target not in LAYERS or target == name:
            continue
        if (name, target) in ALLOWED_UPWARD:
            continue
        assert LAYERS[target] <= mine, (
            f"{name} (layer {mine}) imports {target} (layer {LAYERS[target]})"
        )


@pytest.mark.parametrize(("name", "tree"), MODULES, ids=[n for n, _ in MODULES])
def test_side_effecting_stdlib_is_confined(name: str, tree: ast.Module) -> None:
    for imported in imports_of(tree):
        root = imported.split(".")[0]
        if root in CONFINED:
            assert name in CONFINED[root], f"{name} imports {root}"


@pytest.mark.parametrize(("name", "tree"), MODULES, ids=[n for n, _ in MODULES])
def test_real_clock_read_only_in_clock_module(name: str, tree: ast.Module) -> None:
    if name == "reference.clock":
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            pair = (node.value.id, node.attr)
            assert pair not in CLOCK_READS, f"{name}:{node.lineno} reads {pair[0]}.{pair[1]}"
        if isinstance(node, ast.ImportFrom) and node.module == "time":
            names = {a.name for a in node.names}
            assert not names & {"time", "monotonic", "sleep", "perf_counter"}, name


@pytest.mark.parametrize(("name", "tree"), MODULES, ids=[n for n, _ in MODULES])
def test_no_global_random(name: str, tree: ast.Module) -> None:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "random"
        ):
            assert node.func.attr in RANDOM_CONSTRUCTORS, (
                f"{name}:{node.lineno} calls random.{node.func.attr}(); use the injected Random"
            )
            assert LAYERS.get(name, 0) == 4, f"{name} builds its own Random; take one"
        if isinstance(node, ast.ImportFrom) and node.module == "random":
            names = {a.name for a in node.names} - RANDOM_CONSTRUCTORS
            assert not names, f"{name} imports {sorted(names)} from random"


@pytest.mark.parametrize(("name", "tree"), MODULES, ids=[n for n, _ in MODULES])
def test_environment_read_only_in_config(name: str, tree: ast.Module) -> None:
    if name == "reference.config":
        return
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("environ", "getenv")
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            raise AssertionError(f"{name}:{node.lineno} reads os.{node.attr}")


def test_sim_is_not_imported_by_reference_at_runtime() -> None:
    # The import graph check above is static; this one proves it at run time too.
    import subprocess
    import sys

    code = (
        "import sys, reference, reference.worker, reference.queue, reference.metrics;"
        "print(sorted(m for m in sys.modules if m == 'sim' or m.startswith('sim.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
