"""The architecture of DESIGN.md, checked on the source: the import graph of jaxopt_lab (every
import, function-level ones included, `if TYPE_CHECKING:` blocks left out) has no cycle and
keeps its layers; no private name crosses a package; no module-level `__getattr__`; no library
module over 400 lines."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG = ROOT / "jaxopt_lab"
LIMIT = 400
JAX_FAMILY = {"jax", "jaxlib", "flax", "optax", "orbax"}
# Layers, lowest first (DESIGN.md, "Layers"): a module imports only from its own layer or lower.
LAYERS = [
    {"files", "plugins", "hardware"},
    {"defaults", "expdir", "fairness", "configs", "checkpoints", "workdirs", "tblog"},
    {"optim", "data", "models", "losses"},
    {"tasks", "runloop", "launch"},
    {"train"},
    {"single", "preflight"},
    {"sweep"},
    {"analysis"},
]


def _name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
  skip = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
      skip |= {id(n) for b in node.body for n in ast.walk(b)}
  return skip


def _imports(name: str) -> list[tuple[ast.stmt, list[str]]]:
  """Each import statement of module `name` that runs, with the modules it names (a name
  imported from a package that is itself a module counts as that module)."""
  path = MODULES[name]
  tree = ast.parse(path.read_text())
  skip = _type_checking_nodes(tree)
  out = []
  for node in ast.walk(tree):
    if id(node) in skip:
      continue
    if isinstance(node, ast.Import):
      out.append((node, [a.name for a in node.names]))
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: from the module's package upward
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
      subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
      out.append((node, subs if len(subs) == len(node.names) else [base, *subs]))
  return out


GRAPH = {name: {t for _, targets in _imports(name) for t in targets if t in MODULES and t != name}
         for name in MODULES}
EXTERNAL = {name: {t.split(".")[0] for _, targets in _imports(name) for t in targets
                   if not t.startswith("jaxopt_lab")} for name in MODULES}


def _component(name: str) -> str:
  return name.split(".")[1] if "." in name else ""


def _layer(name: str) -> int:
  comp = _component(name)
  return next(i for i, layer in enumerate(LAYERS) if comp in layer)


def _closure(name: str) -> set[str]:
  seen, todo = set(), [name]
  while todo:
    for t in GRAPH[todo.pop()] - seen:
      seen.add(t)
      todo.append(t)
  return seen


def test_the_graph_is_read_from_every_import():
  # A function-level import counts (the driver once imported its stage runner inside
  # `run_sweep`); an import under `if TYPE_CHECKING:` does not.
  assert "jaxopt_lab.runloop" in GRAPH["jaxopt_lab.launch"]  # inside `launch.run`
  assert "jaxopt_lab.sweep.adaptive.runner" in GRAPH["jaxopt_lab.sweep.driver"]
  assert len(MODULES) > 60 and all(_component(m) for m in MODULES if m != "jaxopt_lab")


def test_no_import_cycle():
  cycles = [m for m in MODULES if m in _closure(m)]
  assert not cycles, f"modules on an import cycle: {cycles}"


def test_every_module_has_a_layer_and_lower_layers_never_import_higher():
  unplaced = sorted({_component(m) for m in MODULES if m != "jaxopt_lab"}
                    - set().union(*LAYERS))
  assert not unplaced, f"components without a layer in this test: {unplaced}"
  upward = [f"{m} -> {t}" for m in MODULES if m != "jaxopt_lab" for t in GRAPH[m]
            if t != "jaxopt_lab" and _layer(t) > _layer(m)]
  assert not upward, upward


@pytest.mark.parametrize("module, allowed", [
    ("optim", {"optim", "plugins"}),  # the optimizers know nothing of models, tasks, sweeps
    ("train", {"optim", "tasks"}),  # the pure core: one point's step
    ("runloop", {"checkpoints"}),
])
def test_what_a_component_may_import(module, allowed):
  names = [m for m in MODULES if _component(m) == module]
  found = {_component(t) for m in names for t in GRAPH[m] if _component(t) != module} - {""}
  assert found <= allowed, f"{module} imports {sorted(found - allowed)}"


@pytest.mark.parametrize("component, through_others", [
    ("analysis", True), ("expdir", True), ("defaults", True), ("fairness", True),
    ("runloop", False),  # its own code has no JAX; its checkpoints are orbax's
])
def test_these_import_no_jax(component, through_others):
  for m in (m for m in MODULES if _component(m) == component):
    reached = {m} | (_closure(m) if through_others else set())
    jax = {f"{r}: {sorted(EXTERNAL[r] & JAX_FAMILY)}" for r in reached if EXTERNAL[r] & JAX_FAMILY}
    assert not jax, f"{m} reaches JAX through {sorted(jax)}"


def test_fixed_designs_do_not_import_adaptive_ones():
  fixed = ["jaxopt_lab.sweep.design", "jaxopt_lab.sweep.space", "jaxopt_lab.sweep.factors"]
  for m in fixed:
    # The registry holds declarations only: a fixed design asks it which names are adaptive.
    adaptive = {t for t in _closure(m) if t.startswith("jaxopt_lab.sweep.adaptive.")}
    assert adaptive <= {"jaxopt_lab.sweep.adaptive.registry"}, (m, adaptive)
  assert not {t for t in GRAPH["jaxopt_lab.sweep.adaptive.registry"]
              if t.startswith("jaxopt_lab.sweep")}


def test_no_private_name_crosses_a_package():
  crossings = []
  for name in MODULES:
    package = name.rsplit(".", 1)[0]
    for node, targets in _imports(name):
      for target in targets:
        home = target if target in MODULES and MODULES[target].name == "__init__.py" else (
            target.rsplit(".", 1)[0])
        private_module = target.rsplit(".", 1)[-1].startswith("_") and target in MODULES
        private_names = isinstance(node, ast.ImportFrom) and any(
            a.name.startswith("_") and not a.name.startswith("__") for a in node.names)
        if (private_module or private_names) and target.startswith("jaxopt_lab") and (
            home != package and not name.startswith(home + ".")):
          crossings.append(f"{name}:{node.lineno} imports {ast.unparse(node)}")
  assert not crossings, crossings


def test_no_module_level_getattr():
  found = [m for m, p in MODULES.items() for node in ast.parse(p.read_text()).body
           if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"]
  assert not found, found


def test_no_library_module_over_400_lines():
  sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in MODULES.values()}
  over = {p: n for p, n in sizes.items() if n > LIMIT}
  assert not over, over
