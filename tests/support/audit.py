"""Waiting for the audit agent's hash chain (shared by the integration and reliability suites)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from app.settings import PROJECT_ROOT


def poll_audit_chain(env: dict, expected: int, *, timeout: float) -> tuple[dict, int | None]:
    """Run `cosmic audit verify --json` until the chain holds ``expected`` entries.

    Returns the last report and the command's exit code once reached (None on timeout)."""
    deadline = time.monotonic() + timeout
    report: dict = {}
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-m", "app.cli", "audit", "verify", "--json"], env=env,
                             cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
        report = json.loads(out.stdout)
        if report.get("total", 0) >= expected:
            return report, out.returncode
        time.sleep(2)
    return report, None
