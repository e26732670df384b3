"""The layers of docs/ARCHITECTURE.md, checked on every module's imports as its source states
them (ast, also those inside functions): the doc's table places each module in one layer; a
module imports only its own layer and those below; only the drivers import Hydra or OmegaConf;
no import circle; no module over 400 lines."""

import ast
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ARCHITECTURE.md"
FOLDERS = ("nst_tf", "hydra_plugins", "scripts")  # every module under them has a layer
SKIPPED = {"nst_tf/conf"}  # the configs (a link to conf/ in a checkout): data, not code
CONFIG_SYSTEM = {"hydra", "omegaconf"}
DRIVERS = "drivers"

# Modules below the drivers that still import Hydra or OmegaConf, until issue 31 takes the
# config system out of them. Exact: one that no longer imports it fails until it is taken off,
# so the set only shrinks.
NOT_YET_AT_THE_EDGE: set[str] = set()

MAX_LINES = 400


def find_modules(root: Path) -> dict[str, Path]:
    """Every module under FOLDERS by dotted name (a package by its __init__.py)."""
    modules = {}
    for folder in FOLDERS:
        for top, dirs, files in os.walk(root / folder):  # links to folders are not followed
            dirs[:] = [d for d in dirs if d != "__pycache__"
                       and (Path(top) / d).relative_to(root).as_posix() not in SKIPPED]
            for name in files:
                if name.endswith(".py"):
                    path = Path(top) / name
                    parts = path.relative_to(root).with_suffix("").parts
                    modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """What `name` imports: our modules by dotted name, others by their top-level package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            # `from nst_tf import color` imports the module nst_tf.color
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                      for alias in node.names}
    return {target if target in modules else target.split(".")[0] for target in found}


def read_layers(doc: str) -> list[tuple[str, list[str]]]:
    """The doc's layer table, top layer first: (layer, its entries as written)."""
    section = doc.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip().strip("|").split("|") for line in section.splitlines()
            if line.startswith("|")]
    assert [cell.strip() for cell in rows[0]] == ["layer", "modules"], rows[0]
    return [(layer.strip(), re.findall(r"`([^`]+)`", entries)) for layer, entries in rows[2:]]


def place(entry: str) -> str:
    """A table entry as a path from the repository's top: a name of nst_tf/ or a path."""
    return entry if entry.startswith(tuple(f"{f}/" for f in FOLDERS[1:])) else f"nst_tf/{entry}"


def layer_of(root: Path, modules: dict[str, Path], table: list[tuple[str, list[str]]]
             ) -> dict[str, int]:
    """Each module's layer, 0 the top; fails for a module with none or two, and for an entry
    naming no module."""
    paths = {name: path.relative_to(root).as_posix() for name, path in modules.items()}
    covers = {(rank, entry): {name for name, path in paths.items() if path == place(entry)
                              or entry.endswith("/") and path.startswith(place(entry))}
              for rank, (_, entries) in enumerate(table) for entry in entries}
    nothing = [entry for (_, entry), names in covers.items() if not names]
    assert not nothing, f"entries in docs/ARCHITECTURE.md's layer table naming no module: {nothing}"
    layers: dict[str, list[int]] = {name: [] for name in modules}
    for (rank, _), names in covers.items():
        for name in names:
            layers[name].append(rank)
    unplaced = sorted(name for name, ranks in layers.items() if len(ranks) != 1)
    assert not unplaced, f"modules in no layer, or in two, of docs/ARCHITECTURE.md: {unplaced}"
    return {name: ranks[0] for name, ranks in layers.items()}


def upward(graph: dict[str, set[str]], layers: dict[str, int], table: list[tuple[str, list[str]]]
           ) -> list[str]:
    """Each import of a module in a layer above the importer's."""
    return sorted(f"{name} ({table[layers[name]][0]}) imports {target} "
                  f"({table[layers[target]][0]})"
                  for name, targets in graph.items() for target in targets
                  if target in layers and layers[target] < layers[name])


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan's)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def code():
    """(modules, what each imports, the layer table, each module's layer)."""
    modules = find_modules(ROOT)
    graph = {name: imports(name, path, modules) for name, path in modules.items()}
    table = read_layers(DOC.read_text())
    return modules, graph, table, layer_of(ROOT, modules, table)


def test_every_module_is_in_one_layer_of_the_doc(code):
    modules, _, table, layers = code
    names = [layer for layer, _ in table]
    assert names[0] == DRIVERS and len(set(names)) == len(names), names
    assert set(layers) == set(modules)


def test_a_module_imports_only_its_layer_and_those_below(code):
    _, graph, table, layers = code
    assert upward(graph, layers, table) == []


def test_only_the_drivers_import_hydra_or_omegaconf(code):
    _, graph, table, layers = code
    below = {name for name, targets in graph.items()
             if targets & CONFIG_SYSTEM and table[layers[name]][0] != DRIVERS}
    assert below - NOT_YET_AT_THE_EDGE == set(), "below the drivers, Hydra or OmegaConf"
    assert NOT_YET_AT_THE_EDGE - below == set(), "at the edge now: take them off the set"


def test_no_import_circle(code):
    _, graph, _, _ = code
    ours = {name: {target for target in targets if target in graph}
            for name, targets in graph.items()}
    assert circles(ours) == []


def test_no_module_is_over_400_lines(code):
    modules, _, _, _ = code
    long = {path.relative_to(ROOT).as_posix() for path in modules.values()
            if len(path.read_text().splitlines()) > MAX_LINES}
    assert long == set(), f"over {MAX_LINES} lines"


def test_the_checks_see_what_they_check(tmp_path):
    """A relative import, an upward import inside a function and the circle they make are all
    seen; a module the table leaves out fails."""
    for path, text in {
        "nst_tf/__init__.py": "",
        "nst_tf/low.py": "def late():\n    from nst_tf import high\n",
        "nst_tf/high.py": "from . import low\nimport omegaconf.errors\n",
    }.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    modules = find_modules(tmp_path)
    graph = {name: imports(name, path, modules) for name, path in modules.items()}
    assert graph == {"nst_tf": set(), "nst_tf.low": {"nst_tf.high"},
                     "nst_tf.high": {"nst_tf.low", "omegaconf"}}
    assert circles(graph | {"omegaconf": set()}) == [["nst_tf.high", "nst_tf.low"]]
    table = read_layers("\n## Layers\n\n| layer | modules |\n|---|---|\n"
                        "| top | `high.py`, `__init__.py` |\n| bottom | `low.py` |\n\n## Next\n")
    assert table == [("top", ["high.py", "__init__.py"]), ("bottom", ["low.py"])]
    layers = layer_of(tmp_path, modules, table)
    assert upward(graph, layers, table) == ["nst_tf.low (bottom) imports nst_tf.high (top)"]
    with pytest.raises(AssertionError, match=r"in no layer.*\['nst_tf.low'\]"):
        layer_of(tmp_path, modules, table[:1])
    with pytest.raises(AssertionError, match=r"naming no module: \['gone.py'\]"):
        layer_of(tmp_path, modules, [*table, ("gone", ["gone.py"])])
