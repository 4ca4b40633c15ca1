"""The package's imports go one way: down its layers, and never round a cycle.

Imports inside functions count too: a function-level import hides a cycle or an
upward dependency from Python (it only fails at call time, and only in some
orders), not from a reader.

The layers are written once, as the table in docs/architecture.md (a row per
layer, the bottom one first; its backticked names outside parentheses are the
layer's modules, relative to the package, a package name covering its
submodules and the longest name winning), and read from there, so the
document and this test cannot drift apart. Every module must be in a layer,
and a module may import only from its own layer and the ones below it.
"""
import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "alignment"
ARCHITECTURE = os.path.join(ROOT, "docs", "architecture.md")
TABLE_HEADER = "| layer | modules | what they know |"


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
  """{module: the package's modules it imports, at any depth of the file}.

  `from alignment.data import batches` imports the module alignment.data.batches
  (the package's __init__, a docstring, does nothing); `from alignment.data.batches
  import EOS_ID` imports alignment.data.batches.
  """
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
        names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                 else node.module for a in node.names]
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


def _outside_parentheses(text: str) -> str:
  """`text` without its parenthesised parts (nested ones too): a module's
  description may name functions in backticks, which are not modules."""
  out, depth = [], 0
  for ch in text:
    depth += ch == "("
    if depth == 0:
      out.append(ch)
    depth -= ch == ")" and depth > 0
  return "".join(out)


def read_layers(path: str = ARCHITECTURE) -> list[tuple[str, list[str]]]:
  """[(layer, [module names])], the bottom layer first, from the layer table of `path`."""
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  assert TABLE_HEADER in lines, f"{path}: no layer table (a row {TABLE_HEADER!r})"
  layers = []
  for line in lines[lines.index(TABLE_HEADER) + 2:]:
    if not line.startswith("|"):
      break
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    names = re.findall(r"`([\w.]+)`", _outside_parentheses(cells[1]))
    layers.append((cells[0], [f"{PACKAGE}.{n}" for n in names]))
  return layers


def layer_of(module: str, layers: list[tuple[str, list[str]]]):
  """(rank, layer name) of the longest listed name that is `module` or a package
  above it; None for a module in no layer."""
  best = None
  for rank, (layer, names) in enumerate(layers):
    for name in names:
      if module == name or module.startswith(name + "."):
        if best is None or len(name) > best[0]:
          best = (len(name), rank, layer)
  return None if best is None else best[1:]


def layer_problems(graph: dict[str, set[str]], layers) -> list[str]:
  """One line per problem: a name listed twice, a module in no layer, an import
  that goes up a layer (importer, imported module and both layers)."""
  problems, seen = [], {}
  for layer, names in layers:
    for name in names:
      if name in seen:
        problems.append(f"{name} is listed in two layers: {seen[name]} and {layer}")
      seen[name] = layer
  for module in sorted(graph):
    if module != PACKAGE and layer_of(module, layers) is None:
      problems.append(f"{module} is in no layer: add it to the table in "
                      "docs/architecture.md")
  for module in sorted(graph):
    low = layer_of(module, layers)
    for dep in sorted(graph[module]):
      high = layer_of(dep, layers)
      if low is not None and high is not None and high[0] > low[0]:
        problems.append(f"{module} ({low[1]}) imports {dep} ({high[1]})")
  return problems


def layer_listing(graph: dict[str, set[str]] | None = None, layers=None) -> str:
  """The layers from the top down, each with its module count and modules (short
  names): what the table in docs/architecture.md says the package is."""
  graph = import_graph() if graph is None else graph
  layers = read_layers() if layers is None else layers
  members = {layer: [] for layer, _ in layers}
  for module in sorted(graph):
    found = layer_of(module, layers)
    if found is not None:
      members[found[1]].append(module.removeprefix(PACKAGE + "."))
  width = max(len(layer) for layer, _ in layers)
  return "\n".join(f"{layer:<{width}}  {len(members[layer]):3d}  {' '.join(members[layer])}"
                   for layer, _ in reversed(layers))


def test_the_finder_finds_a_cycle():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
  graph = import_graph()
  assert "alignment.train.online" in graph and "alignment.evaluation" in graph[
      "alignment.train.online"]  # the walk sees real edges
  cycle = find_cycle(graph)
  assert cycle is None, " -> ".join(cycle)


def test_the_checker_catches_an_upward_import_and_an_unlisted_module(tmp_path):
  doc = tmp_path / "architecture.md"
  doc.write_text("# Layers\n\n" + TABLE_HEADER + "\n|---|---|---|\n"
                 "| low | `base` (its `helper`), `util` | little |\n"
                 "| high | `top`, `base.tool` | a lot |\n\nAfter the table.\n")
  layers = read_layers(str(doc))
  assert layers == [("low", ["alignment.base", "alignment.util"]),
                    ("high", ["alignment.top", "alignment.base.tool"])]
  assert layer_of("alignment.base.x", layers) == (0, "low")
  assert layer_of("alignment.base.tool.y", layers) == (1, "high")  # the longest name wins
  down = {"alignment.top": {"alignment.base.x"}, "alignment.base.x": {"alignment.util"},
          "alignment.base.tool": {"alignment.top"}, "alignment.util": set()}
  assert layer_problems(down, layers) == []
  up = dict(down, **{"alignment.util": {"alignment.base.tool"}, "alignment.new": set()})
  assert layer_problems(up, layers) == [
      "alignment.new is in no layer: add it to the table in docs/architecture.md",
      "alignment.util (low) imports alignment.base.tool (high)"]
  twice = layers + [("higher", ["alignment.util"])]
  assert layer_problems(down, twice) == [
      "alignment.util is listed in two layers: low and higher"]
  assert layer_listing(down, layers).splitlines() == [
      "high    2  base.tool top", "low     2  base.x util"]


def test_every_import_goes_down_the_layers_of_docs_architecture():
  graph, layers = import_graph(), read_layers()
  assert len(layers) >= 5 and all(names for _, names in layers), layers
  print("\nlayers, top down (docs/architecture.md): layer, module count, modules\n" +
        layer_listing(graph, layers))
  problems = layer_problems(graph, layers)
  assert not problems, "\n".join(problems)
