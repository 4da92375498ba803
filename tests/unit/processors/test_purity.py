"""processors/ is the pure core: no Kafka, no streams/, no clock, no I/O, no randomness but
the cipher's, in every module of it, read from the source.

Why it matters: the same fold runs live and in the auditor's replay, so a decision can only be
re-derived if nothing but the log went into it; and a rule module that reached for Kafka or
the wall clock would be a rule no unit test can pin down. The check is an AST walk over every
``processors/*.py`` (a module added later is covered without being listed), and the checker
itself is tested against planted violations of each kind, so that emptying its lists or
weakening its walk fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import processors

PROCESSORS = Path(processors.__file__).parent
MODULES = sorted(p.name for p in PROCESSORS.glob("*.py"))

FORBIDDEN_MODULES = frozenset({
    "streams", "confluent_kafka", "kafka", "faust", "aiokafka", "rocksdict", "sqlite3", "psycopg",
    "socket", "ssl", "http", "urllib", "requests", "subprocess", "multiprocessing", "threading",
    "asyncio", "signal", "logging", "time", "random", "secrets", "tempfile", "shutil", "glob",
    "pathlib", "io", "sys", "importlib",
})  # fmt: skip
"""Modules a pure rule has no business with: Kafka and the runtime, files, the network, other
processes, the clock, randomness, the process itself, logging (a log line is I/O and may leak)."""

FORBIDDEN_CALLS = frozenset({"open", "print", "input", "exec", "eval", "compile", "__import__", "breakpoint"})
"""Built-ins that do I/O or run code from strings."""

FORBIDDEN_METHODS = frozenset({
    "now", "utcnow", "today", "time", "monotonic", "perf_counter", "sleep",
    "read_text", "write_text", "read_bytes", "write_bytes", "urlopen", "getenv",
})  # fmt: skip
"""Attribute calls that read the clock, touch files or the environment, whatever the module."""

ALLOWED_OS = frozenset({"urandom"})
"""``os`` only for ``os.urandom``: the data keys and nonces of crypto-shredding need the
operating system's randomness (an AES-GCM nonce must never repeat), and nothing else of ``os``."""

REQUIRED = {
    "modules": {"streams", "confluent_kafka", "kafka", "socket", "time", "random", "pathlib", "logging", "threading"},
    "calls": {"open", "print"},
    "methods": {"now", "time", "read_text", "sleep"},
}


def impurities(source: str) -> list[str]:
    """What in ``source`` is not pure, as readable strings (empty when it is pure)."""
    tree = ast.parse(source)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN_MODULES:
                    found.append(f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            top = (node.module or "").split(".")[0]
            if node.level == 0 and top in FORBIDDEN_MODULES:
                found.append(f"from {node.module} import ...")
            if top == "os" and any(a.name not in ALLOWED_OS for a in node.names):
                found.append(f"from os import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in FORBIDDEN_CALLS:
                found.append(f"{f.id}()")
            elif isinstance(f, ast.Attribute) and f.attr in FORBIDDEN_METHODS:
                found.append(f"{ast.unparse(f)}()")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
            if node.attr not in ALLOWED_OS:
                found.append(f"os.{node.attr}")
    return found


@pytest.mark.parametrize("name", MODULES)
def test_every_processors_module_is_pure(name: str) -> None:
    assert impurities((PROCESSORS / name).read_text(encoding="utf-8")) == [], f"processors/{name} must stay pure"


def test_the_core_is_every_module_it_should_be() -> None:
    # the guard and the fold among them: a checker that skipped them would pass vacuously
    assert {"fold.py", "guard.py", "policy.py", "shredding.py", "audit.py", "messages.py", "envelope.py", "chain.py"} <= set(
        MODULES
    )


def test_the_lists_hold_what_purity_means() -> None:
    assert REQUIRED["modules"] <= FORBIDDEN_MODULES
    assert REQUIRED["calls"] <= FORBIDDEN_CALLS
    assert REQUIRED["methods"] <= FORBIDDEN_METHODS


@pytest.mark.parametrize("module", sorted(FORBIDDEN_MODULES))
def test_the_checker_catches_every_forbidden_import(module: str) -> None:
    assert impurities(f"import {module}\n")
    assert impurities(f"def f():\n    from {module} import x\n")  # a lazy import inside a function too


@pytest.mark.parametrize(
    "snippet",
    [
        *(f"{call}('x')\n" for call in sorted(FORBIDDEN_CALLS)),
        *(f"x = something.{method}()\n" for method in sorted(FORBIDDEN_METHODS)),
        "import os\nos.environ['X']\n",
        "import os\nos.listdir('.')\n",
        "from os import path\n",
    ],
)
def test_the_checker_catches_clock_io_and_environment(snippet: str) -> None:
    assert impurities(snippet), snippet


def test_the_checker_lets_the_cipher_have_its_randomness() -> None:
    assert impurities("import os\nkey = os.urandom(32)\n") == []
