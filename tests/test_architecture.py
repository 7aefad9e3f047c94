"""The package's import graph: no cycles; the model, losses, training step and loop never
reach the host tuning (crl_jax.host) or the pipelines (crl_jax.experiments)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ("crl_jax.models", "crl_jax.methods", "crl_jax.losses", "crl_jax.steps", "crl_jax.train")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / "crl_jax").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """crl_jax module -> the crl_jax modules it imports (anywhere in the file)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                           else node.module for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def _reach(graph, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_the_graph_is_read():
    graph = import_graph()
    assert "crl_jax.steps" in graph["crl_jax.train"]
    assert "crl_jax.host" in graph["crl_jax.main"]
    assert "crl_jax.train" in graph["crl_jax.experiments.synthetic"]


def test_no_import_cycles():
    graph = import_graph()
    cycles = sorted(m for m in graph if m in _reach(graph, m))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_core_modules_never_reach_host_tuning_or_the_pipelines():
    graph = import_graph()
    core = [m for m in graph if m.startswith(CORE)]
    assert len(core) > 8
    for module in core:
        bad = sorted(d for d in _reach(graph, module)
                     if d.startswith(("crl_jax.host", "crl_jax.experiments")))
        assert bad == [], f"{module} imports {bad}"
