"""Starting a real `hf-metaembed serve` process on a free local port and talking HTTP to it (urllib), for the tests
of tests/serve and benchmarks/serve_load.py."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

START_TIMEOUT = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A `python -m hf_metaembed serve` subprocess; `request` sends one HTTP request to it."""

    def __init__(self, model: str, *options: str, api_key: str | None = None, log_path: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
        command = [sys.executable, "-m", "hf_metaembed", "serve", "--model", model, "--port", str(self.port)]
        command += ["--threads", "1", *options]
        if api_key:
            command += ["--api-key", api_key]
        self.log = open(log_path or os.devnull, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, workers: int = 1) -> set[int]:
        """Wait until `workers` distinct worker processes answered /ready; their process ids."""
        deadline = time.monotonic() + START_TIMEOUT
        ready: set[int] = set()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.process.returncode} before it was ready")
            try:
                status, body, _ = self.request("GET", "/ready")
            except OSError:
                status = None
            if status == 200:
                ready.add(body["pid"])
                if len(ready) >= workers:
                    return ready
            time.sleep(0.1 if status else 0.3)
        raise TimeoutError(f"the server was not ready after {START_TIMEOUT} s (ready workers: {ready})")

    def request(
        self, method: str, path: str, body=None, raw: bytes | None = None, headers: dict | None = None, key=True
    ) -> tuple[int, dict | str, dict]:
        """`(status, JSON body (text when not JSON), headers)` of one request on a new connection."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if key and self.api_key:
            all_headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, text, answer_headers = response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as error:
            status, text, answer_headers = error.code, error.read().decode(), dict(error.headers)
        try:
            return status, json.loads(text), answer_headers
        except ValueError:
            return status, text, answer_headers

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit code (killed if it does not exit in `timeout` seconds)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode
