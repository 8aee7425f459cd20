"""Start and stop llama.cpp's ``llama-server`` for the conformance tests.

The binary is ``$LLMKIT_LLAMA_SERVER`` (default ``<repo>/../shared/servers/bin/llama-server``);
the models and the chat template are found next to it (``<bin>/../models``,
``<bin>/../templates``), or in ``$LLMKIT_LLAMA_MODELS``. Flags as in
``shared/servers/README.md``. A server is stopped by its PID: SIGCONT (in case a test froze
it), SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import orjson

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAT_MODEL = "tiny-chat-f32.gguf"
EMBED_MODEL = "minilm-embed-q8_0.gguf"
TEMPLATE = "chatml_json_tools.jinja"
CHAT_CONTEXT = 8192  # -c, shared by the -np 4 slots: 2048 tokens per request
SLOTS = 4
STOP_GRACE_S = 5.0
START_TIMEOUT_S = 60.0


def server_binary() -> Path:
    env = os.environ.get("LLMKIT_LLAMA_SERVER")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "servers" / "bin" / "llama-server"


def models_dir() -> Path:
    env = os.environ.get("LLMKIT_LLAMA_MODELS")
    return Path(env) if env else server_binary().resolve().parent.parent / "models"


def templates_dir() -> Path:
    return server_binary().resolve().parent.parent / "templates"


def missing_reason() -> str | None:
    """Why the conformance servers cannot start here (``None`` when they can)."""
    binary = server_binary()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return f"llama-server binary not found at {binary} (set LLMKIT_LLAMA_SERVER)"
    for path in (models_dir() / CHAT_MODEL, models_dir() / EMBED_MODEL, templates_dir() / TEMPLATE):
        if not path.is_file():
            return f"{path} not found (set LLMKIT_LLAMA_MODELS / LLMKIT_LLAMA_SERVER)"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def chat_args() -> list[str]:
    return [
        "-m", str(models_dir() / CHAT_MODEL), "--alias", "tiny-chat",
        "--jinja", "--chat-template-file", str(templates_dir() / TEMPLATE),
        "-c", str(CHAT_CONTEXT), "-np", str(SLOTS), "-t", "2", "--no-webui",
    ]


def embed_args() -> list[str]:
    return [
        "-m", str(models_dir() / EMBED_MODEL), "--alias", "minilm",
        "--embeddings", "-c", "2048", "-np", str(SLOTS), "-t", "2", "--no-webui",
    ]


@dataclass
class LlamaServer:
    """One running ``llama-server`` process."""

    args: list[str]
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log: tempfile._TemporaryFileWrapper[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (OpenAI routes are under ``/v1``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> LlamaServer:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log")
        self.process = subprocess.Popen(
            [str(server_binary()), *self.args, "--host", "127.0.0.1", "--port", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"llama-server exited at start:\n{self.log_tail()}")
            if self.healthy():
                return self
            time.sleep(0.1)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"llama-server not healthy after {START_TIMEOUT_S:.0f} s:\n{tail}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def get_json(self, path: str) -> object:
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            return orjson.loads(resp.read())

    def post_json(self, path: str, body: object) -> object:
        request = urllib.request.Request(
            self.url + path, data=orjson.dumps(body), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            return orjson.loads(resp.read())

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def log_tail(self, size: int = 4000) -> str:
        if self.log is None:
            return ""
        self.log.flush()
        data = Path(self.log.name).read_bytes()
        return data[-size:].decode(errors="replace")

    def stop(self) -> None:
        """SIGCONT (a test may have frozen it), SIGTERM, SIGKILL after the grace period."""
        process = self.process
        if process is not None and process.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                try:
                    os.kill(process.pid, sig)
                except ProcessLookupError:
                    break
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_GRACE_S)
        if process is not None and process.returncode is None:
            process.wait(STOP_GRACE_S)
        if self.log is not None:
            self.log.close()
            self.log = None
