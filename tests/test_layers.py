"""The package has no import cycles of any kind (deferred and TYPE_CHECKING imports
included), and the layering contract of pyproject.toml holds.

``make lint`` runs import-linter for the layers; this test adds what a layers contract
cannot see: a cycle between any two modules, a package and its own submodules included.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = ("agents", "tools", "graphs", "guardrails", "ui", "bench")


def _installed_layout(dest: Path) -> Path:
    """The `tierflow` package as installed (package-dir mapping made physical)."""

    def skip(_: str, names: list[str]) -> list[str]:
        return [n for n in names if n == "__pycache__" or ("." in n and not n.endswith(".py"))]

    shutil.copytree(ROOT / "tierflow", dest / "tierflow", ignore=skip)
    for folder in MAPPED:
        shutil.copytree(ROOT / folder, dest / "tierflow" / folder, ignore=skip)
    return dest


def _imports(package: str, path: Path) -> dict[str, set[str]]:
    """``module -> modules it imports`` for ``package`` found under ``path``, read by grimp
    in a fresh interpreter (this one has the editable install of tierflow loaded)."""
    script = (
        "import json, sys, grimp\n"
        "g = grimp.build_graph(sys.argv[1], cache_dir=None)\n"
        "print(json.dumps({m: sorted(g.find_modules_directly_imported_by(m)) for m in g.modules}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, package],
        cwd=path,
        env={"PYTHONPATH": str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return {m: set(i) for m, i in json.loads(done.stdout).items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or a module importing itself
    (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return found


def test_no_import_cycles_of_any_kind(tmp_path: Path) -> None:
    graph = _imports("tierflow", _installed_layout(tmp_path))
    assert len(graph) > 80  # the whole package was read
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from cyc import b\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import cyc.a\n"
    )
    assert _cycles(_imports("cyc", tmp_path)) == [["cyc.a", "cyc.b"]]


def test_the_layer_contract_holds(tmp_path: Path) -> None:
    layout = _installed_layout(tmp_path)
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), str(ROOT / "pyproject.toml")],
        cwd=layout,
        env={"PYTHONPATH": str(layout), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout
