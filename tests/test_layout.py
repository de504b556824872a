"""The package's layout holds: no import circles (at any depth, function-level imports too), and
generic modules import neither Keras nor JAX at module level."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "exportkit"
GENERIC = (
    "exportkit.context",
    "exportkit.pipeline",
    "exportkit.schema",
    "exportkit.signatures",
    "exportkit.composition",
    "exportkit.report",
    "exportkit.errors",
    "exportkit.imports",
    "exportkit.cli",
    "exportkit.api",
    "exportkit.sources.base",
)
FRAMEWORKS = (
    "keras",
    "jax",
    "jaxlib",
    "flax",
    "orbax",
    "tf_keras",
    "exportkit.keras",
    "exportkit.jax",
    "exportkit.tf_keras",
)


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def imports(path: Path, top_level_only: bool):
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module  # `from pkg import module` imports pkg.module (and pkg: see graph)
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def graph():
    """module -> the exportkit modules it imports. ``from pkg import module`` is an edge to
    ``pkg.module`` alone, and the package a module lives in is no edge: Python imports a
    package before its modules whatever they do, so neither can close a circle."""
    known = dict(modules())
    edges = {}
    for name, path in known.items():
        found = {i for i in imports(path, top_level_only=False) if i in known and i != name}
        submodule_parents = {i.rpartition(".")[0] for i in found}
        edges[name] = sorted(i for i in found if not name.startswith(i + ".") and i not in submodule_parents)
    return edges


def test_no_import_circles():
    edges, state, cycles = graph(), {}, []

    def visit(node, stack):
        state[node] = "open"
        for child in edges[node]:
            if state.get(child) == "open":
                cycles.append(stack[stack.index(child) :] + [child])
            elif child not in state:
                visit(child, stack + [child])
        state[node] = "done"

    for name in edges:
        if name not in state:
            visit(name, [name])
    assert cycles == []
    assert len(edges) > 30  # every module was read


def test_generic_modules_import_no_framework_at_module_level():
    known = dict(modules())
    for name in GENERIC + tuple(n for n in known if n.startswith("exportkit.stages.")):
        found = [
            i
            for i in imports(known[name], top_level_only=True)
            if any(i == f or i.startswith(f + ".") for f in FRAMEWORKS)
        ]
        assert found == [], f"{name} imports {found} at module level"
