"""``mpp dev --port-offset N``: the embedded stack as its own process, every port moved by N, so it
runs beside another stack; Ctrl-C (SIGINT) stops it with exit code 0."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from devstack.stack import DEFAULT_PORTS, Ports

pytestmark = pytest.mark.timeout(150)


def _all_free(ports: Ports) -> bool:
    with contextlib.ExitStack() as stack:
        for port in (ports.temporal, ports.web_ui, ports.api, ports.sandbox, ports.ops, ports.metrics):
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _free_offset() -> int:
    for _ in range(50):
        offset = random.randrange(20_000, 40_000)
        if _all_free(DEFAULT_PORTS.shifted(offset)):
            return offset
    raise RuntimeError("no offset with six free ports")


def test_shifted_moves_every_port() -> None:
    assert DEFAULT_PORTS.shifted(100) == Ports(7333, 8333, 8100, 8101, 8102, 8103)
    assert DEFAULT_PORTS.shifted(0) == DEFAULT_PORTS


def test_mpp_dev_serves_on_the_shifted_ports_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    offset = _free_offset()
    ports = DEFAULT_PORTS.shifted(offset)
    log = (tmp_path / "dev.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.cli", "dev", "--port-offset", str(offset), "--var-dir", str(tmp_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        answered: dict[str, int] = {}
        while time.monotonic() < deadline and len(answered) < 3:
            assert process.poll() is None, (tmp_path / "dev.log").read_text(errors="replace")[-3000:]
            for name, url in (
                ("api", f"http://127.0.0.1:{ports.api}/healthz"),
                ("metrics", f"http://127.0.0.1:{ports.metrics}/readyz"),
                ("web ui", f"http://127.0.0.1:{ports.web_ui}/"),
            ):
                with contextlib.suppress(httpx.HTTPError):
                    answered[name] = httpx.get(url, timeout=2.0).status_code
            time.sleep(0.3)
        assert answered == {"api": 200, "metrics": 200, "web ui": 200}
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:  # a failed check: stop it as Ctrl-C does, so its dev server goes too
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own group: the dev server with it
                process.wait()
        log.close()
