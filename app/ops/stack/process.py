"""Process and port helpers for the local stack: start detached, find ours, wait, stop."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from app.core.errors import MissingToolError, PortInUseError, StackError

#: Every process the stack starts carries this marker on its command line or in
#: its environment, so that ``down`` stops only what ``up`` started.
MARKER_ENV = "COSMIC_STACK_MARKER"


def stack_marker(*, service: str, home: Path) -> str:
    """The marker of the stack's ``service`` process kept in ``home``: ``cosmic.stack.<service>=<home>``."""
    return f"cosmic.stack.{service}={home}"


def require_tool(*, name: str, hint: str, candidates: Sequence[str] = ()) -> str:
    """Return the path of ``name`` (or one of ``candidates``), else raise MissingToolError."""
    for candidate in (*candidates, name):
        if os.path.sep in candidate:
            if os.access(candidate, os.X_OK):
                return candidate
            continue
        found = shutil.which(candidate)
        if found:
            return found
    raise MissingToolError(f"'{name}' was not found on this machine. {hint}")


def port_is_free(*, host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` and it can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_accepts(*, host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_ports_free(*, host: str, ports: Mapping[str, int]) -> None:
    """Raise PortInUseError naming the first port (and its purpose) that is taken."""
    for purpose, port in ports.items():
        if not port_is_free(host=host, port=port):
            holder = describe_port_holder(port=port)
            raise PortInUseError(
                f"port {port} on {host} ({purpose}) is already in use by another process"
                f"{' (' + holder + ')' if holder else ''}; stop it or choose another port "
                "through the COSMIC_* settings"
            )


def describe_port_holder(*, port: int) -> str:
    """Best-effort name of the process listening on ``port`` (via ``ss``), or ''."""
    ss = shutil.which("ss")
    if not ss:
        return ""
    try:
        out = subprocess.run(
            [ss, "-H", "-ltnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    for line in out.splitlines():
        if "users:" in line:
            return line.split("users:", 1)[1].strip()
    return ""


def spawn_detached(
    *, argv: Sequence[str], log_path: Path, env: Mapping[str, str], cwd: Path | None = None
) -> int:
    """Start ``argv`` in its own session with output appended to ``log_path``; return its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_raise_open_files_limit,
        )
    return proc.pid


#: Open-file limit wanted for the servers: a broker keeps several files open per partition,
#: and a long test session creates tens of thousands of partitions.
WANTED_OPEN_FILES = 262_144


def _raise_open_files_limit() -> None:
    """In the child before exec: raise RLIMIT_NOFILE as far as allowed (root may raise the hard limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (WANTED_OPEN_FILES, hard):
        if limit == resource.RLIM_INFINITY or limit <= soft:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(limit, hard)))
            return
        except (ValueError, OSError):
            continue


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            _reap(pid)
            return False
    except OSError:
        return False
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def process_has_marker(*, pid: int, marker: str) -> bool:
    """True when ``marker`` appears in the process's command line or environment."""
    for name in ("cmdline", "environ"):
        try:
            if marker.encode() in Path(f"/proc/{pid}/{name}").read_bytes():
                return True
        except OSError:
            continue
    return False


def find_marked_pids(*, marker: str) -> list[int]:
    """Every live process whose command line or environment carries ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            pid = int(entry.name)
            if process_has_marker(pid=pid, marker=marker) and pid_alive(pid):
                pids.append(pid)
    return sorted(pids)


def terminate(*, pid: int, timeout: float = 30.0) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL."""
    if not pid_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(50):
        if not pid_alive(pid):
            return
        time.sleep(0.1)


def log_tail(*, path: Path, lines: int = 40) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(content[-lines:])


def wait_until(
    *,
    what: str,
    check: Callable[[], bool],
    timeout: float,
    log_path: Path,
    pid: int | None = None,
    interval: float = 0.5,
) -> None:
    """Poll ``check`` until true; raise StackError with the log tail on timeout or early exit."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - a probe failing only means "not yet"
            pass
        if pid is not None and not pid_alive(pid):
            raise StackError(
                f"{what} exited before it became ready; last lines of {log_path}:\n"
                + log_tail(path=log_path)
            )
        if time.monotonic() >= deadline:
            raise StackError(
                f"{what} did not become ready within {timeout:.0f} s; last lines of {log_path}:\n"
                + log_tail(path=log_path)
            )
        time.sleep(interval)


def run_checked(
    *, argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120.0,
    what: str,
) -> str:
    """Run a short command; raise StackError with its output if it fails."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout,
            env=dict(env) if env is not None else None,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{what} did not finish within {timeout:.0f} s") from exc
    except OSError as exc:
        raise StackError(f"{what} could not be run: {exc}") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()[-30:]
        raise StackError(f"{what} failed (exit {done.returncode}):\n" + "\n".join(output))
    return done.stdout
