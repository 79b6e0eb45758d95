"""Importing the app only declares: no schema file read, no socket opened (issue #19 item 3).

The imports run in a fresh interpreter under an audit hook (``sys.addaudithook``), so modules
this test process imported before cannot hide what an import does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Audit events that mean network I/O (``socket.gethostname`` is a local system call and allowed).
_SOCKET_EVENTS = ("socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
                  "socket.gethostbyname", "socket.gethostbyaddr", "socket.sendto")

_PROBE = textwrap.dedent(
    """
    import importlib, json, os, pkgutil, sys, traceback

    os.environ.setdefault("COSMIC_STORE", "memory://")
    AVRO = os.path.join(sys.argv[1], "avro")
    SOCKET_EVENTS = set(sys.argv[2].split(","))
    seen = []

    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(args[0]))
            if path.startswith(AVRO + os.sep):
                seen.append({"event": event, "what": path, "where": traceback.format_stack(limit=6)[:-1]})
        elif event in SOCKET_EVENTS:
            seen.append({"event": event, "what": repr(args)[:200], "where": traceback.format_stack(limit=6)[:-1]})

    sys.addaudithook(hook)
    imported = ["app.worker.main"]
    importlib.import_module("app.worker.main")
    for package in ("agents", "tables", "app.web"):
        for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
            name = package + "." + module.name
            importlib.import_module(name)
            imported.append(name)
    print(json.dumps({"imported": imported, "seen": seen}))
    """
)


def _probe() -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, str(ROOT), ",".join(_SOCKET_EVENTS)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "COSMIC_STORE": "memory://", "PYTHONPATH": str(ROOT)},
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_importing_the_app_and_every_agent_module_opens_no_schema_file_and_no_socket() -> None:
    result = _probe()
    assert "agents.job_lifecycle" in result["imported"] and "app.web.jobs" in result["imported"]
    assert len(result["imported"]) > 20
    details = "\n".join(f"{seen['event']} {seen['what']}\n" + "".join(seen["where"]) for seen in result["seen"])
    assert result["seen"] == [], f"importing did I/O:\n{details}"


def test_the_probe_sees_a_schema_read() -> None:
    """The hook itself works: reading a codec's schema (first use) is an ``open`` under avro/."""
    probe = _PROBE.replace('print(json.dumps', 'from app.worker.main import codecs\n'
                                                 'codecs.for_topic("job-lifecycle").schema\nprint(json.dumps')
    completed = subprocess.run(
        [sys.executable, "-c", probe, str(ROOT), ",".join(_SOCKET_EVENTS)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "COSMIC_STORE": "memory://", "PYTHONPATH": str(ROOT)},
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    seen = json.loads(completed.stdout.strip().splitlines()[-1])["seen"]
    assert [s["what"] for s in seen] == [str(ROOT / "avro" / "job_lifecycle.avsc")]
