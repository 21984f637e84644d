"""A controller run as its own process on loopback, and calls to its API: helpers of the SDN tests and the
isolation benchmark (not installed with the product). With ``networks`` the controller authenticates: one gateway,
``gw-test``, whose token is ``token`` (also in ``token_file``, mode 0600, for the hook's ``token_file=``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from ipaddress import ip_network
from pathlib import Path

from sdn.auth import Gateway, digest, new_token, save

REPO = Path(__file__).resolve().parents[1]
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ControllerProcess:
    """``python -m sdn.controller`` with its own config; stopped by pid."""

    def __init__(self, folder: Path, allowlist: list[str], reconcile_every: float = 5.0,
                 networks: list[str] | None = None) -> None:  # fmt: skip
        self.of_port, self.api_port = free_port(), free_port()
        self.config = folder / "controller.toml"
        self.token: str | None = None
        self.token_file = folder / "gateway.token"
        auth = 'auth = "none"'
        if networks:
            tokens = folder / "tokens.json"
            self.token = new_token("gw-test")
            save(tokens, {"gw-test": Gateway("gw-test", digest(self.token), tuple(map(ip_network, networks)))})
            fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(self.token + "\n")
            auth = f"tokens = {json.dumps(str(tokens))}"
        self.config.write_text(
            f'[openflow]\nhost = "127.0.0.1"\nport = {self.of_port}\n[api]\nhost = "127.0.0.1"\nport = {self.api_port}\n'
            f"{auth}\n"
            f'[store]\npath = "{folder / "blocks.sqlite"}"\n[timers]\nreconcile_every = {reconcile_every}\n'
            f"[safety]\nallowlist = {json.dumps(allowlist)}\n"  # last: callers append [safety] keys
        )  # fmt: skip
        self.log = folder / "controller.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> "ControllerProcess":
        self.process = subprocess.Popen([sys.executable, "-m", "sdn.controller", "--config", str(self.config)],
                                        cwd=REPO, stdout=open(self.log, "a"), stderr=subprocess.STDOUT)  # fmt: skip
        return self

    def wait_for_switch(self, timeout: float = 20.0) -> None:
        """Poll the API until the switch has connected (OVS's own is_connected lags seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if call(self.url + "/health", "GET")[1].get("switches", 0) >= 1:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"no switch connected within {timeout} s; log:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def call(url: str, method: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with NO_PROXY.open(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
