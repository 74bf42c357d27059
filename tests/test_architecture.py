"""The layers hold: the import-linter contracts pass, they fail when a core module imports the trainer, and no
module of the package takes part in an import cycle."""

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          env={"PYTHONPATH": str(root / "src"), "PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=120)


def test_layer_contracts_hold_and_bite(tmp_path):
    r = _lint(ROOT)
    assert r.returncode == 0 and "0 broken" in r.stdout, r.stdout + r.stderr
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.safetensors"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    paths = copy / "src" / "flowmaps" / "core" / "paths.py"
    paths.write_text(paths.read_text() + "\n\ndef _upward():\n    from ..run import trainer  # noqa: F401\n")
    r = _lint(copy)
    assert r.returncode != 0 and "BROKEN" in r.stdout and "flowmaps.core.paths -> flowmaps.run.trainer" in r.stdout, \
        r.stdout + r.stderr


def test_no_import_cycle():
    graph = grimp.build_graph("flowmaps")
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(part) > 1:
                cycles.append(sorted(part))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    assert cycles == []
