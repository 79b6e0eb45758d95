"""The layout's one rule (README, "Layout"): ``app/core`` is the pure domain and never imports
the Faust app, the web layer, the agents or the tables."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "app" / "core"
#: What core may import from the rest of the project: Faust's record internals, used by the codec.
ALLOWED_OUTSIDE_CORE = ("app.worker.faust_internals",)


def _project_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("app", "agents", "tables")}


def test_core_modules_import_only_core_and_faust_internals() -> None:
    wrong = {}
    for path in sorted(CORE.glob("*.py")):
        outside = {name for name in _project_imports(path)
                   if not name.startswith("app.core") and not name.startswith(ALLOWED_OUTSIDE_CORE)}
        if outside:
            wrong[path.name] = sorted(outside)
    assert not wrong, f"app/core imports other groups: {wrong}"


def test_importing_all_of_core_declares_no_faust_app() -> None:
    probe = (
        "import importlib, json, pkgutil, sys\n"
        "import app.core\n"
        "for m in pkgutil.iter_modules(app.core.__path__):\n"
        "    importlib.import_module('app.core.' + m.name)\n"
        "print(json.dumps(sorted(n for n in sys.modules if n.split('.')[0] in ('app', 'agents', 'tables'))))\n"
    )
    completed = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                               timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert completed.returncode == 0, completed.stderr[-3000:]
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    assert len([name for name in loaded if name.startswith("app.core.")]) >= 15
    stray = [name for name in loaded if not name.startswith(("app.core", "app.worker.faust_internals"))
             and name not in ("app", "app.worker")]
    assert stray == [], f"importing app/core loaded {stray}"


def test_nothing_in_app_imports_an_agent_module() -> None:
    """Agents are leaves: library code they share lives in app/ or tables/, never in agents/."""
    wrong = {str(path.relative_to(ROOT)): sorted(name for name in _project_imports(path) if name.split(".")[0] == "agents")
             for path in sorted((ROOT / "app").rglob("*.py"))}
    assert {path: names for path, names in wrong.items() if names} == {}
