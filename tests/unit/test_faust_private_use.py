"""Everything that reaches into Faust (or aiokafka, mode) lives in ``app/worker/faust_internals``,
where :func:`app.worker.faust_internals.install` checks the pinned versions (issue #19 item 2).

Outside that package, code may not read or call a private name (``obj._name``,
``getattr(obj, "_name")``, ``from faust... import _name``) that the project does not define
itself: such a name can only belong to a library.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INTERNALS = ROOT / "app" / "worker" / "faust_internals"
#: Private names of the standard library that are part of its documented API.
DOCUMENTED = {"_replace", "_asdict", "_fields", "_make", "_field_defaults",  # namedtuple
              "_options",  # faust.Record's documented options (``Record._options``)
              "_dumps", "_loads"}  # faust.Codec's documented extension points


def _sources() -> list[Path]:
    paths = [*ROOT.joinpath("app").rglob("*.py"), *ROOT.joinpath("agents").rglob("*.py"),
             *ROOT.joinpath("tables").rglob("*.py")]
    return sorted(p for p in paths if "__pycache__" not in p.parts)


def _defined_private_names(trees: dict[Path, ast.AST]) -> set[str]:
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def _private_uses(tree: ast.AST) -> list[tuple[int, str]]:
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            uses.append((node.lineno, node.attr))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr", "hasattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and node.args[1].value.startswith("_") and not node.args[1].value.startswith("__")):
            uses.append((node.lineno, node.args[1].value))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("faust", "aiokafka", "mode"):
            uses.extend((node.lineno, alias.name) for alias in node.names if alias.name.startswith("_"))
    return uses


def test_only_faust_internals_uses_private_names_of_libraries() -> None:
    trees = {path: ast.parse(path.read_text()) for path in _sources()}
    ours = _defined_private_names(trees) | DOCUMENTED
    found = [f"{path.relative_to(ROOT)}:{line} {name}" for path, tree in trees.items()
             if INTERNALS not in path.parents for line, name in _private_uses(tree) if name not in ours]
    assert found == [], "private library names outside app/worker/faust_internals:\n" + "\n".join(found)


def test_the_check_finds_a_private_library_name() -> None:
    tree = ast.parse("x = consumer._committed_offset\ny = getattr(store, '_db_for_partition', None)\n"
                     "from faust.streams import _current_event\n")
    assert sorted(name for _, name in _private_uses(tree)) == ["_committed_offset", "_current_event", "_db_for_partition"]
