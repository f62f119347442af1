"""TensorBoard for a project's logs, started from the UI: one server per project, on localhost, kept
for the life of the process (a second Start gives the same address); a server that cannot start says
why (its own last lines). No gradio."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lora_trainer.project import Project

START_TIMEOUT_S = 60.0
HOST = "127.0.0.1"


class TensorBoardError(RuntimeError):
    """TensorBoard did not start (the message says why)."""


@dataclass
class _Server:
    process: subprocess.Popen
    url: str
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class TensorBoards:
    """The TensorBoard servers this process started, one per project folder."""

    def __init__(self):
        self._servers: dict[Path, _Server] = {}
        self._lock = threading.Lock()

    def start(self, project: Project) -> str:
        """The address of the project's TensorBoard, started when none runs; TensorBoardError when it
        cannot start."""
        key = project.root.resolve()
        with self._lock:
            server = self._servers.get(key)
            if server is not None and server.process.poll() is None:
                return server.url
            if not project.log.is_dir():
                raise TensorBoardError(f"no logs yet in {project.log}: start a training first")
            server = self._servers[key] = self._launch(project)
        return server.url

    def url(self, project: Project) -> str | None:
        server = self._servers.get(project.root.resolve())
        return server.url if server is not None and server.process.poll() is None else None

    def stop_all(self) -> None:
        with self._lock:
            for server in self._servers.values():
                if server.process.poll() is None:
                    server.process.terminate()
                    try:
                        server.process.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        server.process.kill()
            self._servers.clear()

    @staticmethod
    def _launch(project: Project) -> _Server:
        try:
            import tensorboard  # noqa: F401  (installed with the trainer's requirements)
        except ImportError:
            raise TensorBoardError("TensorBoard is not installed in this Python (pip install tensorboard)") from None
        port = _free_port()
        log = Path(tempfile.mkstemp(prefix="lora-trainer-tensorboard-", suffix=".log")[1])
        command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(project.log.resolve()),
                   "--host", HOST, "--port", str(port)]
        with open(log, "wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
                raise TensorBoardError(f"TensorBoard ended at start (exit code {process.returncode}): "
                                       + " / ".join(tail))
            if _answers(port):
                return _Server(process, f"http://{HOST}:{port}/", log)
            time.sleep(0.2)
        process.kill()
        raise TensorBoardError(f"TensorBoard did not answer on port {port} within {START_TIMEOUT_S:.0f} s (log: {log})")


SERVERS = TensorBoards()  # one registry per process: a rebuilt tab keeps the servers it started
