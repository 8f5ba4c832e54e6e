"""The module graph: imports flow one way, and inference never reaches the training code.

Parses every module's imports (top level and inside functions) with ``ast``, so a lazy import
that climbs back up is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "mlp_jax"


def _imports(path: Path) -> set[str]:
    """``mlp_jax`` modules that ``path`` imports anywhere in its body."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mlp_jax"):
            if node.module == "mlp_jax":
                out.update(a.name for a in node.names)
            else:
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("mlp_jax."))
    return out - {path.stem}


GRAPH = {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in GRAPH.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_there_is_no_import_cycle():
    cycles = sorted(m for m in GRAPH if m in _reachable(m))
    assert not cycles, f"modules on an import cycle: {cycles}"


@pytest.mark.parametrize(
    "module, forbidden",
    [
        # the core knows nothing of tracking, serving or the runner
        *(
            (m, {"tracking", "registry", "pyfunc", "serve", "predict", "runner", "predictor", "model_uri"})
            for m in ("config", "data", "features", "model", "artifact", "checkpoint", "distributed", "train", "sweep")
        ),
        # inference never reaches the training loop, the optimiser or the runner
        *(
            (m, {"train", "optim", "checkpoint", "runner", "tracking", "registry", "sweep"})
            for m in ("predictor", "serve", "predict", "model_uri", "artifact")
        ),
        # the predictor is below everything that serves it, the exporter included
        ("predictor", {"export", "serve", "predict", "pyfunc"}),
    ],
)
def test_imports_flow_one_way(module, forbidden):
    reached = _reachable(module)
    assert not (reached & forbidden), f"{module} reaches {sorted(reached & forbidden)}"


def test_nothing_imports_the_runner():
    assert not [m for m, deps in GRAPH.items() if "runner" in deps]
