"""The layout shows the data flow, and the imports keep to it: read from the source.

Rooms, lowest first: ``schemas`` (the contract), ``processors`` (the pure rules), then the
runtime: ``streams.settings``, ``streams.plumbing`` (what every Kafka client shares), the worker
runtime and the local broker, the user commands, the bench, and the command line on top. A room
imports only from rooms below it, no module imports itself round a circle (lazy imports inside
functions count too), and no command borrows from another command: a helper two of them need
belongs to the plumbing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import processors
import schemas
import streams

ROOTS = [Path(pkg.__file__).parent for pkg in (schemas, processors, streams)]

RANK = {
    "schemas": 0,
    "processors": 1,
    "streams.settings": 2,
    "streams.plumbing": 3,
    "streams.worker": 4,
    "streams.broker": 4,
    "streams.commands": 5,
    "streams.bench": 6,
    "streams.cli": 7,
    "streams": 7,
}


def module_name(path: Path, root: Path) -> str:
    parts = (root.name, *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, at the top or inside a function."""
    modules = {module_name(p, root): p for root in ROOTS for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def room(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "streams":
        return parts[0]
    return ".".join(parts[:2]) if len(parts) > 1 else "streams"


def upward(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((m, d) for m, deps in graph.items() for d in deps if room(m) != room(d) and RANK[room(d)] > RANK[room(m)])


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, path)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_every_module_sits_in_a_room_of_the_layout() -> None:
    assert {room(m) for m in import_graph()} <= set(RANK)


def test_no_room_imports_from_a_room_above_it() -> None:
    assert upward(import_graph()) == []


def test_no_import_circle_anywhere() -> None:
    assert circles(import_graph()) == []


def test_no_command_borrows_from_another() -> None:
    graph = import_graph()
    assert [(m, d) for m, deps in graph.items() for d in deps if room(m) == room(d) == "streams.commands"] == []


def test_the_checks_see_what_they_look_for() -> None:
    # a planted upward import, circle and borrowing must be found, or the tests above prove nothing
    graph = {"processors.fold": {"streams.worker.loop"}, "streams.worker.loop": {"processors.fold"}}
    assert upward(graph) == [("processors.fold", "streams.worker.loop")]
    assert circles(graph) == [["processors.fold", "streams.worker.loop", "processors.fold"]]
