"""RabbitMQ from Debian's ``rabbitmq-server`` package, run as a private node of the stack.

The node keeps everything (Erlang cookie, Mnesia, logs, plugins file) under its own
directory, binds only to loopback, and is addressed by its own node name, so it never
touches a system-wide RabbitMQ.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from app.core.errors import StackError
from app.ops.stack.process import (
    MARKER_ENV,
    find_marked_pids,
    pid_alive,
    port_accepts,
    require_tool,
    run_checked,
    stack_marker,
    wait_until,
)

RABBIT_HINT = (
    "Install Debian's RabbitMQ: `apt-get update && apt-get install -y rabbitmq-server` "
    "(scripts/bootstrap.sh does this without starting the system service)."
)
SBIN_DIRS = ("/usr/lib/rabbitmq/bin",)


@dataclass(frozen=True, kw_only=True)
class RabbitEndpoint:
    host: str
    port: int
    user: str
    password: str
    vhost: str

    @classmethod
    def from_url(cls, url: str) -> "RabbitEndpoint":
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise StackError(f"COSMIC_RABBITMQ_URL must be amqp://…, got scheme {parts.scheme!r}")
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5672,
            user=unquote(parts.username or "guest"),
            password=unquote(parts.password or "guest"),
            vhost=vhost,
        )


class RabbitNode:
    """One RabbitMQ node with its data under ``root``."""

    def __init__(self, *, root: Path, endpoint: RabbitEndpoint) -> None:
        self.root = root
        self.endpoint = endpoint
        self.amqp_port = endpoint.port
        self.management_port = endpoint.port + 10000  # 15672 for the default 5672
        self.dist_port = endpoint.port + 20000  # 25672 for the default 5672
        suffix = "" if endpoint.port == 5672 else f"-{endpoint.port}"
        self.nodename = f"cosmic{suffix}@localhost"

    # -- paths -----------------------------------------------------------------------------
    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.nodename}.log"

    @property
    def console_log_path(self) -> Path:
        return self.log_dir / "console.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "rabbitmq.pid"

    @property
    def marker(self) -> str:
        return stack_marker(service="rabbitmq", home=self.root)

    @property
    def sbin(self) -> Path:
        for candidate in SBIN_DIRS:
            if Path(candidate, "rabbitmq-server").exists():
                return Path(candidate)
        found = require_tool(name="rabbitmq-server", hint=RABBIT_HINT)
        return Path(found).resolve().parent

    def has_management_plugin(self) -> bool:
        base = Path("/usr/lib/rabbitmq/lib")
        return any(base.glob("rabbitmq_server-*/plugins/rabbitmq_management-*"))

    def ports(self) -> dict[str, int]:
        ports = {"rabbitmq amqp": self.amqp_port, "rabbitmq distribution": self.dist_port}
        if self.has_management_plugin():
            ports["rabbitmq management"] = self.management_port
        return ports

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "HOME": str(self.root / "home"),  # the Erlang cookie lives here
                "RABBITMQ_NODENAME": self.nodename,
                "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.log_dir),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
                "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
                "RABBITMQ_PID_FILE": str(self.pid_file),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
                MARKER_ENV: self.marker,
            }
        )
        return env

    def prepare(self) -> None:
        for sub in ("home", "mnesia", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        plugins = "[rabbitmq_management]." if self.has_management_plugin() else "[]."
        (self.root / "enabled_plugins").write_text(plugins + "\n")
        conf = [
            f"listeners.tcp.1 = {self.endpoint.host}:{self.amqp_port}",
            "log.file.level = info",
            "log.console = false",
        ]
        if self.has_management_plugin():
            conf += [
                f"management.tcp.ip = {self.endpoint.host}",
                f"management.tcp.port = {self.management_port}",
            ]
        (self.root / "rabbitmq.conf").write_text("\n".join(conf) + "\n")

    # -- run -------------------------------------------------------------------------------
    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        return run_checked(
            argv=[str(self.sbin / "rabbitmqctl"), "-n", self.nodename, *args],
            env=self.env(), timeout=timeout, what=f"rabbitmqctl {' '.join(args)}",
        )

    def running_pid(self) -> int | None:
        pids = find_marked_pids(marker=self.marker)
        beams = [pid for pid in pids if _is_beam(pid)]
        return beams[0] if beams else None

    def start(self, *, timeout: float = 90.0) -> None:
        if self.running_pid():
            return
        self.prepare()
        self.pid_file.unlink(missing_ok=True)
        with open(self.console_log_path, "ab") as log:
            done = subprocess.run(
                [str(self.sbin / "rabbitmq-server"), "-detached"], env=self.env(),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=60,
            )
        if done.returncode != 0:
            raise StackError(
                f"rabbitmq-server -detached failed (exit {done.returncode}); see {self.console_log_path}"
            )
        wait_until(
            what=f"RabbitMQ node {self.nodename} on {self.endpoint.host}:{self.amqp_port}",
            check=lambda: port_accepts(host=self.endpoint.host, port=self.amqp_port),
            timeout=timeout,
            log_path=self.log_path if self.log_path.exists() else self.console_log_path,
        )
        self.ctl("await_startup", "--timeout", str(int(timeout)), timeout=timeout + 10)
        self._ensure_user()

    def _ensure_user(self) -> None:
        """Create the URL's vhost and user when they are not RabbitMQ's defaults."""
        ep = self.endpoint
        if ep.vhost != "/":
            if ep.vhost not in self.ctl("list_vhosts", "--quiet", "--no-table-headers").split():
                self.ctl("add_vhost", ep.vhost)
        if ep.user != "guest" or ep.password != "guest":
            users = self.ctl("list_users", "--quiet", "--no-table-headers")
            if ep.user not in [line.split()[0] for line in users.splitlines() if line.strip()]:
                self.ctl("add_user", ep.user, ep.password)
                self.ctl("set_user_tags", ep.user, "administrator")
        self.ctl("set_permissions", "-p", ep.vhost, ep.user, ".*", ".*", ".*")

    def stop(self, *, timeout: float = 60.0) -> int | None:
        pid = self.running_pid()
        if not pid:
            return None
        try:
            self.ctl("stop", timeout=timeout)
        except StackError:
            from app.ops.stack.process import terminate

            terminate(pid=pid, timeout=timeout)
        wait_until(
            what=f"RabbitMQ node {self.nodename} to stop",
            check=lambda: not pid_alive(pid),
            timeout=timeout,
            log_path=self.log_path,
        )
        return pid

    def version(self) -> str:
        """The server's version from the management API, else from rabbitmqctl."""
        if self.has_management_plugin():
            try:
                return str(self.management_get("/api/overview")["rabbitmq_version"])
            except Exception:  # noqa: BLE001 - fall back to the CLI
                pass
        try:
            return self.ctl("version", timeout=30).strip()
        except StackError:
            return "unknown"

    def management_get(self, path: str) -> dict:
        import base64

        request = urllib.request.Request(f"http://{self.endpoint.host}:{self.management_port}{path}")
        token = base64.b64encode(f"{self.endpoint.user}:{self.endpoint.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def healthy(self) -> bool:
        return bool(self.running_pid()) and port_accepts(host=self.endpoint.host, port=self.amqp_port)


def _is_beam(pid: int) -> bool:
    try:
        return b"beam" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False


def epmd_path() -> str | None:
    return shutil.which("epmd") or next(
        (str(p) for p in Path("/usr/lib/erlang").glob("erts-*/bin/epmd")), None
    )


def stop_epmd_if_idle() -> bool:
    """Stop epmd when no Erlang node is registered with it any more; True if stopped."""
    epmd = epmd_path()
    if not epmd or not port_accepts(host="127.0.0.1", port=4369):
        return False
    names = subprocess.run([epmd, "-names"], capture_output=True, text=True, timeout=10).stdout
    if any(line.startswith("name ") for line in names.splitlines()):
        return False
    subprocess.run([epmd, "-kill"], capture_output=True, timeout=10)
    return True
