"""``free_port``: ports for listeners started later, never from the kernel's ephemeral range."""

from __future__ import annotations

import socket

from app.ops import worker_process
from app.ops.worker_process import free_port


def test_ports_are_below_the_ephemeral_range_and_never_handed_out_twice() -> None:
    low = worker_process._ephemeral_low()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(worker_process._PORT_RANGE[0] <= port < min(low, worker_process._PORT_RANGE[1]) for port in ports)


def test_a_port_someone_listens_on_is_skipped(monkeypatch) -> None:  # noqa: ANN001
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen()
        taken = listener.getsockname()[1]
        monkeypatch.setattr(worker_process, "_PORT_RANGE", (taken, taken + 2))
        monkeypatch.setattr(worker_process, "_handed_out", set())
        assert free_port() == taken + 1
