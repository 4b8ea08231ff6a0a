"""A server under test on a free loopback port: started, waited for (`/health`), read
(`/metrics`) and stopped. The one copy the benchmarks share; import it with

    sys.path.insert(0, os.path.dirname(HERE))  # benchmarks/
    from served import JIELONG, Served, free_port
"""

import os
import socket
import subprocess
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# `JIELONG_BIN` runs another build (a baseline) through the same benchmark.
JIELONG = os.environ.get("JIELONG_BIN") or os.path.join(ROOT, "target", "release", "jielong")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A server process answering on `port`; a context manager that stops it on exit.

    `Served.jielong(flags, threads)` starts `jielong -t THREADS serve --port P FLAGS…`;
    `Served(command, port)` any other OpenAI-compatible server (llama-server).
    """

    def __init__(self, command, port, timeout=120):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    @classmethod
    def jielong(cls, flags=(), threads=2, timeout=120):
        port = free_port()
        command = [JIELONG, "-t", str(threads), "serve", "--port", str(port), *flags]
        return cls(command, port, timeout)

    def _wait_healthy(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the server on port {self.port} did not become healthy in {timeout} s")

    def client(self):
        """The official `openai` client on this server."""
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key="unused")

    def metric(self, name):
        """A counter or gauge from `/metrics` (None when the server does not report it)."""
        text = urllib.request.urlopen(f"{self.url}/metrics", timeout=10).read().decode()
        return next((float(line.split()[1]) for line in text.splitlines()
                     if line.startswith(name + " ")), None)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
