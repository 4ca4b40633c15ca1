"""The package's import graph has no cycle, counting imports inside functions too.

A function-level import hides a cycle from Python (it only fails at call time,
and only in some orders), not from a reader: the layers must stay layers.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "alignment"


def _modules() -> dict[str, str]:
  out = {}
  for dirpath, _, names in os.walk(os.path.join(ROOT, PACKAGE)):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(dirpath, name)
        module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        out[module.removesuffix(".__init__")] = path
  return out


def import_graph() -> dict[str, set[str]]:
  """{module: the package's modules it imports, at any depth of the file}."""
  modules = _modules()
  graph = {}
  for module, path in modules.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    deps = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
      else:
        continue
      deps |= {n for n in names if n in modules and n != PACKAGE}
    graph[module] = deps - {module}
  return graph


def find_cycle(graph: dict[str, set[str]]):
  """One cycle as a list of modules (first repeated at the end), or None."""
  state: dict[str, int] = {}  # 1: on the current path, 2: finished
  path: list[str] = []

  def visit(node):
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return path[path.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    path.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_the_finder_finds_a_cycle():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
  graph = import_graph()
  assert "alignment.train.online" in graph and "alignment.evaluation" in graph[
      "alignment.train.online"]  # the walk sees real edges
  cycle = find_cycle(graph)
  assert cycle is None, " -> ".join(cycle)
