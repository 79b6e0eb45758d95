"""Where and with what a run was measured: machine, software versions, revision."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from typing import Any

from app.core.settings import PROJECT_ROOT, Settings

PACKAGES = ("faust-streaming", "aiokafka", "fastavro", "aiohttp", "python-schema-registry-client", "rocksdict")


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    values[name] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    except OSError:
        pass
    return values


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    mem = _meminfo()
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_total_gib": round(mem.get("MemTotal", 0) / 2**30, 1),
        "memory_available_gib": round(mem.get("MemAvailable", 0) / 2**30, 1),
        "os": platform.platform(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    info["load_average_1m"] = load_average()
    return info


def cpu_times() -> list[int] | None:
    """The machine's aggregate CPU times (jiffies) from /proc/stat: user nice system idle iowait irq
    softirq steal ..."""
    try:
        with open("/proc/stat") as handle:
            first = handle.readline().split()
        return [int(v) for v in first[1:9]] if first and first[0] == "cpu" else None
    except (OSError, ValueError):
        return None


def cpu_share(before: list[int] | None, after: list[int] | None) -> dict[str, float]:
    """Busy, iowait and steal shares (%) of all CPU time between two :func:`cpu_times` readings.
    Steal is time a virtual machine's host gave to other guests: a high value means the figures
    of this run were taken on a machine with less CPU than its core count suggests."""
    if not before or not after:
        return {}
    delta = [b - a for a, b in zip(before, after)]
    total = sum(delta)
    if total <= 0:
        return {}
    user, nice, system, idle, iowait, irq, softirq, steal = delta
    return {
        "busy_pct": round(100 * (user + nice + system + irq + softirq) / total, 1),
        "iowait_pct": round(100 * iowait / total, 1),
        "steal_pct": round(100 * steal / total, 1),
    }


def load_average() -> float | None:
    """The 1-minute load average (other work on the machine skews every figure)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _stack_versions(settings: Settings) -> dict[str, str]:
    """Kafka and RabbitMQ versions as ``cosmic stack status`` reports them (local stack)."""
    from app.ops.stack.kafka import KAFKA_VERSION
    from app.ops.stack.manager import StackManager

    out = {"kafka": KAFKA_VERSION, "kafka_detail": "local stack status unknown", "rabbitmq": "unknown"}
    try:
        statuses = {s.name: s for s in StackManager(settings=settings, echo=lambda _l: None).status()}
    except Exception as exc:  # noqa: BLE001 - versions are informative only
        out["kafka_detail"] = f"local stack status failed: {exc!r}"
        return out
    kafka, rabbit = statuses.get("kafka"), statuses.get("rabbitmq")
    if kafka is not None:
        out["kafka"] = kafka.version
        out["kafka_detail"] = (f"local stack at {kafka.address}, {kafka.detail}" if kafka.healthy
                               else f"local stack not healthy ({kafka.detail}): version is the stack's pin")
    if rabbit is not None and rabbit.healthy:
        out["rabbitmq"] = rabbit.version
    return out


def versions(settings: Settings) -> dict[str, str]:
    found: dict[str, str] = {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    found.update(_stack_versions(settings))
    found["schema_registry"] = f"cosmic (app/ops/registry) at {settings.schema_registry_url}"
    return found


def revision() -> str:
    """``git describe``-like: the short commit, ``+dirty`` when the tree has changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
