"""A real tidesync server on a loopback port for the tests (the `tidesync` binary of this
build: `cargo build -p tidesync-cli`, or TIDESYNC_BIN), and tokens for it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[3]
SPACE = "team:py"


def binary() -> Path:
    explicit = os.environ.get("TIDESYNC_BIN")
    if explicit:
        return Path(explicit)
    for profile in ("debug", "release"):
        candidate = ROOT / "target" / profile / "tidesync"
        if candidate.exists():
            return candidate
    raise RuntimeError("build the server first: cargo build -p tidesync-cli (or set TIDESYNC_BIN)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data: Path):
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(data.parent / "server.log", "wb")
        self.process = subprocess.Popen(
            [str(binary()), "serve", "--data-dir", str(data), "--listen", f"127.0.0.1:{self.port}",
             "--policy", "orders=strict"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.time() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"the server did not start; see {self.log.name}")
            time.sleep(0.05)

    def token(self, user: str = "alice", space: str = SPACE) -> str:
        out = subprocess.run(
            [str(binary()), "token", "create", "--data-dir", str(self.data), "--user", user,
             "--space", space],
            check=True, capture_output=True, text=True,
        ).stdout
        match = re.search(r"tsk_[A-Za-z0-9]+", out)
        assert match, out
        return match.group(0)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    root = tmp_path_factory.mktemp("server")
    running = Server(root / "data")
    yield running
    running.stop()


@pytest.fixture
def token(server) -> str:
    return server.token()
