"""The package's dependency rule (docs/design.md), checked on every import statement.

Each subpackage of slot_ot_jax is a layer; an import of ours (module-level or inside a
function) must go to the same layer or to one the rule allows. The module-level import
graph must also be free of cycles.
"""
import ast
import pathlib
import tempfile

from absl.testing import absltest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "slot_ot_jax"

# Layer -> layers it may import (besides itself). "tasks.base" is the Task interface.
ALLOWED = {
    "transport": set(),
    "modules": {"transport"},
    "data": set(),
    "evaluation": set(),
    "tasks": {"transport", "modules", "data", "evaluation"},
    "training": {"tasks.base", "evaluation"},
    "analysis": {"transport", "modules", "data", "evaluation", "tasks", "tasks.base",
                 "training"},
    # The top-level __init__ re-exports the public API.
    "": {"transport", "modules"},
}


def _layer(module: str) -> str:
  """'slot_ot_jax.tasks.base' -> 'tasks.base'; other modules of a layer -> the layer."""
  parts = module.split(".")[1:]
  if not parts:
    return ""
  if parts[:2] == ["tasks", "base"] or (parts == ["tasks"]):
    return "tasks.base"  # the tasks package itself only re-exports base
  return parts[0]


def _module_name(path: pathlib.Path, package: pathlib.Path = PACKAGE) -> str:
  rel = path.relative_to(package.parent).with_suffix("")
  parts = list(rel.parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _imports(path: pathlib.Path, top_level_only: bool = False, package: pathlib.Path = PACKAGE):
  """(line, imported module) for every import of slot_ot_jax in the file."""
  tree = ast.parse(path.read_text())
  nodes = tree.body if top_level_only else list(ast.walk(tree))
  for node in nodes:
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      if node.module == "slot_ot_jax" or node.module.startswith("slot_ot_jax."):
        for alias in node.names:
          # `from slot_ot_jax.x import y`: y may be a submodule or a name of x.
          candidate = f"{node.module}.{alias.name}"
          sub = package.parent.joinpath(*candidate.split("."))
          is_module = sub.with_suffix(".py").exists() or (sub / "__init__.py").exists()
          yield node.lineno, candidate if is_module else node.module
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith("slot_ot_jax"):
          yield node.lineno, alias.name


def violations(package: pathlib.Path = PACKAGE):
  found = []
  for path in sorted(package.rglob("*.py")):
    name = _module_name(path, package)
    layer = name.split(".")[1] if name.count(".") else ""
    if name == "slot_ot_jax.tasks":
      layer = "tasks.base"
    for line, target in _imports(path, package=package):
      target_layer = _layer(target)
      own = {layer} | ({"tasks"} if layer == "tasks.base" else set())
      if target_layer in own or (layer == "tasks" and target_layer == "tasks.base"):
        continue
      if layer == "tasks.base" and target_layer == "tasks.base":
        continue
      if target_layer not in ALLOWED.get(layer, set()):
        found.append(f"{path.relative_to(package.parent)}:{line}: {name} ({layer or 'top'}) "
                     f"imports {target} ({target_layer or 'top'})")
  return found


def module_graph(package: pathlib.Path = PACKAGE):
  graph = {}
  for path in sorted(package.rglob("*.py")):
    name = _module_name(path)
    deps = set()
    for _, target in _imports(path, top_level_only=True):
      # `from slot_ot_jax.a import name` depends on module slot_ot_jax.a.
      deps.add(target)
    graph[name] = deps - {name}
  return graph


def find_cycle(graph):
  state = {}
  stack = []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for dep in sorted(graph.get(node, ())):
      if dep not in graph:
        continue
      if state.get(dep) == "open":
        return stack[stack.index(dep):] + [dep]
      if dep not in state:
        cycle = visit(dep)
        if cycle:
          return cycle
    stack.pop()
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


class LayoutTest(absltest.TestCase):

  def test_every_import_follows_the_rule(self):
    self.assertEqual(violations(), [])

  def test_no_import_cycle(self):
    graph = module_graph()
    # A package's __init__ importing its own submodules is not a cycle unless a submodule
    # imports the package back at module level; both are in the graph.
    self.assertIsNone(find_cycle(graph))

  def test_rule_catches_a_violation(self):
    # The checker itself must fail on a forbidden import: a numerics file importing a module.
    tmpdir = tempfile.TemporaryDirectory()
    self.addCleanup(tmpdir.cleanup)
    tmp = pathlib.Path(tmpdir.name) / "slot_ot_jax"
    (tmp / "transport").mkdir(parents=True)
    (tmp / "modules").mkdir()
    (tmp / "__init__.py").write_text("")
    (tmp / "transport" / "__init__.py").write_text("")
    (tmp / "modules" / "__init__.py").write_text("")
    (tmp / "modules" / "attention.py").write_text("from slot_ot_jax.transport import x\n")
    (tmp / "transport" / "bad.py").write_text(
        "def f():\n  from slot_ot_jax.modules import attention\n")
    found = violations(tmp)
    self.assertLen(found, 1)
    self.assertIn("transport/bad.py:2", found[0])

  def test_cycle_detector_finds_a_cycle(self):
    self.assertEqual(find_cycle({"a": {"b"}, "b": {"a"}}), ["a", "b", "a"])
    self.assertIsNone(find_cycle({"a": {"b"}, "b": set()}))

  def test_public_imports(self):
    from slot_ot_jax import SlotAttention  # pylint: disable=g-import-not-at-top
    from slot_ot_jax import SlotMLP  # pylint: disable=g-import-not-at-top
    from slot_ot_jax import transport  # pylint: disable=g-import-not-at-top
    from slot_ot_jax.modules import attention  # pylint: disable=g-import-not-at-top
    self.assertIs(SlotAttention, attention.SlotAttention)
    self.assertIs(SlotMLP, attention.SlotMLP)
    for name in ("sinkhorn", "mesh", "mesh_sinkhorn", "emd", "emd_sinkhorn", "slot_softmax",
                 "get_cost_fn", "entropy", "mesh_entropy"):
      self.assertTrue(callable(getattr(transport, name)), name)


if __name__ == "__main__":
  absltest.main()
