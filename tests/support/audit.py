"""Waiting for the audit agent's hash chain (shared by the integration and reliability suites)."""

from __future__ import annotations

import json
import subprocess
import sys

from app.core.settings import PROJECT_ROOT
from support.polling import wait_until


def poll_audit_chain(env: dict, expected: int, *, timeout: float) -> tuple[dict, int | None]:
    """Run `cosmic audit verify --json` until the chain holds ``expected`` entries.

    Returns the last report and the command's exit code once reached (None on timeout)."""

    def verify() -> tuple[dict, int]:
        out = subprocess.run([sys.executable, "-m", "app.ops.cli", "audit", "verify", "--json"], env=env,
                             cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
        return json.loads(out.stdout), out.returncode

    report, code = wait_until(verify, timeout=timeout, interval=2.0, what=f"{expected} audit chain entries",
                              accept=lambda answer: answer[0].get("total", 0) >= expected, fail=False)
    return (report, code) if report.get("total", 0) >= expected else (report, None)
