"""The package keeps its shape: layers that import only downwards, a core free of Lightning and Hydra,
and no reaching into Lightning's or torch's private attributes (any 2.x release may change them)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "src" / "backprop_lab"
# What each layer may import from the project (itself included); the shared leaf modules first.
LAYERS = {
    "errors": set(),
    "paths": set(),
    "stats": set(),
    "provenance": set(),
    "core": {"core"},
    "data": {"errors", "data"},
    "inspection": {"errors", "paths", "stats", "core", "data", "inspection"},
    "training": {"errors", "paths", "stats", "provenance", "core", "data", "inspection", "training"},
    "reporting": {"errors", "paths", "stats", "provenance", "core", "data", "inspection", "training", "reporting"},
}
FRAMEWORK_INTERNALS = {"__wrapped__"}  # dunders that are a wrapper's internals, not a public protocol


def _sources(*folders: Path) -> list[Path]:
    return sorted(p for folder in folders for p in folder.rglob("*.py"))


def _own_names(trees: list[ast.AST]) -> set[str]:
    """Every underscore name the project defines itself: its private helpers may use each other."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return {n for n in names if n.startswith("_")}


def private_accesses(source: str, own: set[str]) -> list[str]:
    """`line: what` for each use of a private name that the project does not define: attribute
    access, getattr/setattr/hasattr with a literal name, and imports of private modules."""
    tree = ast.parse(source)
    own = own | _own_names([tree])
    found = []

    def private(name: str) -> bool:
        dunder = name.startswith("__") and name.endswith("__")
        return name in FRAMEWORK_INTERNALS or (name.startswith("_") and not dunder and name not in own)

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) >= 2:
            name = node.args[1]
            literal = isinstance(name, ast.Constant) and isinstance(name.value, str)
            if node.func.id in ("getattr", "setattr", "hasattr", "delattr") and literal and private(name.value):
                found.append(f"{node.lineno}: {node.func.id}(..., {name.value!r})")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                if any(private(part) for part in module.split(".")):
                    found.append(f"{node.lineno}: import {module}")
            if isinstance(node, ast.ImportFrom):
                found += [f"{node.lineno}: import {a.name}" for a in node.names if private(a.name)]
    return found


def test_the_private_access_check_finds_what_it_must():
    """The checker itself: each of these is a reach into a framework's internals."""
    bad = (
        "import torch\nfrom torch._dynamo import config\nfrom torch.optim.optimizer import _global_hooks\n"
        "torch._foreach_norm(grads)\ntrainer._signal_connector.received_sigterm = True\n"
        "opt._on_before_step()\ninner = getattr(step, '__wrapped__')\nlayer._parameters['weight']\n"
        "hasattr(opt, '_opt_called')\n"
    )
    assert len(private_accesses(bad, set())) == 8  # every line but the first
    ok = "class A:\n    def __init__(self):\n        self._x = 1\n\n    def _f(self):\n"
    ok += "        return self._x, A.__name__\n"
    assert private_accesses(ok, set()) == []


def test_the_package_and_scripts_use_only_public_framework_apis():
    files = _sources(PACKAGE, ROOT / "src" / "hydra_plugins", ROOT / "scripts") + [ROOT / "train.py"]
    own = _own_names([ast.parse(p.read_text()) for p in files]) | {p.stem for p in files}  # and its own modules
    found = {str(p.relative_to(ROOT)): hits for p in files if (hits := private_accesses(p.read_text(), own))}
    assert found == {}


def _project_imports(path: Path) -> set[str]:
    """The first-level parts of backprop_lab that `path` imports (`core`, `training`, ...)."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            bits = name.split(".")
            if bits[0] == "backprop_lab" and len(bits) > 1:
                parts.add(bits[1])
    return {p for p in parts if p in LAYERS}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_each_layer_imports_only_the_layers_below_it(layer):
    files = [PACKAGE / f"{layer}.py"] if (PACKAGE / f"{layer}.py").exists() else _sources(PACKAGE / layer)
    assert files
    wrong = {str(p.relative_to(PACKAGE)): sorted(_project_imports(p) - LAYERS[layer]) for p in files}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_the_core_imports_neither_lightning_nor_hydra():
    code = (
        "import sys, backprop_lab.core\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'pytorch_lightning', 'hydra', "
        "'omegaconf', 'torchmetrics'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
