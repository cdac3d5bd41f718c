"""Several SAM2Plus replicas behind the shipped HAProxy (haproxy/front.cfg + haproxy/replicas.cfg),
all real on loopback: N gunicorn servers (one worker each, untrained hiera-t on CPU) sharing a
PostgreSQL settings store, and HAProxy balancing by task id. Replicas can be killed and started
again on their port; HAProxy's log tells which replica served each request."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import requests

from tests.support.front import HAPROXY_DIR, Front, haproxy_front
from tests.support.servers import GUNICORN, TEST_MODEL, free_port, start_logged, stop, wait_for

REPLICAS_CFG = HAPROXY_DIR / "replicas.cfg"
REPLICA_COUNT = 3  # replicas.cfg's server lines
# front.cfg's httplog line: client [accept date] frontend backend/server timers status ... "METHOD PATH ..."
_ROUTED = re.compile(
    r'\[(?P<date>[^\]]+)\] front (?P<backend>\S+)/(?P<server>\S+) (?P<timers>\S+) (?P<status>\d+) .*"\S+ (?P<path>\S+)'
)


@dataclasses.dataclass
class Replica:
    """One gunicorn replica on a fixed port: `start` (again), `kill` (SIGKILL, master and worker)."""

    name: str
    port: int
    env: dict
    log: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> None:
        """Start gunicorn (without waiting for it)."""
        with open(self.log, "ab") as handle:
            handle.write(f"\n--- started at {time.time():.3f}\n".encode())
        self.process = start_logged([GUNICORN, "_wsgi:app"], self.env, self.log)

    def wait(self, timeout: float = 240) -> None:
        wait_for(f"{self.url}/health", self.process, self.log, timeout, f"replica {self.name}")

    def kill(self) -> float:
        """SIGKILL the whole replica (master and worker) at once; returns the time it happened."""
        os.killpg(self.process.pid, signal.SIGKILL)
        killed = time.time()
        self.process.wait(10)
        return killed

    def counts(self) -> dict:
        """The replica's own counters (/metrics?format=json of its one worker): encoder runs, caches."""
        return requests.get(f"{self.url}/metrics", params={"format": "json"}, timeout=10).json()


@dataclasses.dataclass
class Route:
    """One request as HAProxy logged it: when it was accepted, the replica that served it, its status,
    and HAProxy's timers in ms (TR/Tw/Tc/Tr/Ta: request, queue, connect, server response, total)."""

    accepted: str
    server: str
    status: int
    path: str
    timers: tuple[int, ...] = ()

    @property
    def haproxy_ms(self) -> int:
        """What HAProxy added to the request: its total time less the server's answer time (Ta - Tr)."""
        return self.timers[4] - self.timers[3]


@dataclasses.dataclass
class Cluster:
    """The replicas, the front (HAProxy) and the shared settings URL."""

    replicas: list[Replica]
    front: Front
    settings_url: str
    images: str = ""  # host:port of the test's image server

    @property
    def url(self) -> str:
        return self.front.url

    def replica(self, name: str) -> Replica:
        (found,) = [replica for replica in self.replicas if replica.name == name]
        return found

    def routes(self) -> list[Route]:
        """Every request HAProxy has logged so far, in order."""
        found = []
        for line in self.front.log.read_text(errors="replace").splitlines():
            if match := _ROUTED.search(line):
                timers = tuple(int(t) for t in match["timers"].lstrip("+").split("/"))
                found.append(Route(match["date"], match["server"], int(match["status"]), match["path"], timers))
        return found

    def route_of(self, tag: str, timeout: float = 5) -> Route:
        """The logged request whose path holds `tag` (e.g. `click=17`); HAProxy logs it once it ends."""
        deadline = time.monotonic() + timeout
        while True:
            routed = [route for route in self.routes() if f"{tag}&" in route.path + "&"]
            if routed:
                return routed[-1]
            if time.monotonic() > deadline:
                raise AssertionError(f"HAProxy logged no request with {tag}")
            time.sleep(0.05)

    def state_changes(self, name: str, state: str) -> int:
        """How often HAProxy's log has said replica `name` is `state` ("UP" or "DOWN")."""
        return self.front.log.read_bytes().count(f"Server sam2plus/{name} is {state}".encode())

    def wait_state(self, name: str, state: str, seen: int, timeout: float = 60) -> None:
        """Wait until HAProxy's log says replica `name` is `state` more than `seen` times."""
        deadline = time.monotonic() + timeout
        while self.state_changes(name, state) <= seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"HAProxy did not mark {name} {state} within {timeout} s")
            time.sleep(0.05)

    def watch_state(self, name: str, state: str, seen: int, timeout: float = 120) -> dict:
        """Poll HAProxy's log every 50 ms in a thread; the dict gets "at", the time the log said replica
        `name` is `state` for the (`seen` + 1)th time."""
        found: dict = {}

        def poll():
            deadline = time.monotonic() + timeout
            while self.state_changes(name, state) <= seen and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.state_changes(name, state) > seen:
                found["at"] = time.time()

        threading.Thread(target=poll, daemon=True).start()
        return found

    def encoder_runs(self) -> dict[str, int]:
        """Each live replica's encoder runs."""
        live = [replica for replica in self.replicas if replica.process.poll() is None]
        return {replica.name: replica.counts()["encoder_runs"] for replica in live}


@contextlib.contextmanager
def replica_cluster(settings_url: str, env: dict, log_dir: Path, count: int = REPLICA_COUNT, threads: int = 4):
    """`count` gunicorn replicas (each with its own CACHE_DIR and MODEL_DIR under `log_dir`, all on
    SETTINGS_URL=`settings_url`, plus `env`) behind HAProxy with front.cfg + replicas.cfg; yields a
    `Cluster` once every replica answers and HAProxy is up. Everything is stopped however the block ends."""
    replicas = []
    for n in range(1, count + 1):
        folder = log_dir / f"replica{n}"
        folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        replica_env = {
            **os.environ,
            **TEST_MODEL,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WORKERS": "1",
            "THREADS": str(threads),
            "TIMEOUT": "300",
            "LOG_LEVEL": "INFO",
            "CACHE_DIR": str(folder / "cache"),
            "MODEL_DIR": str(folder / "models"),
            "SETTINGS_URL": settings_url,
            **env,
        }
        replicas.append(Replica(f"replica{n}", port, replica_env, folder / "gunicorn.log"))
    try:
        for replica in replicas:
            replica.launch()
        for replica in replicas:
            replica.wait()
        addresses = {f"REPLICA{n}_ADDR": f"127.0.0.1:{r.port}" for n, r in enumerate(replicas, 1)}
        with haproxy_front("unused:1", log_dir, REPLICAS_CFG, env=addresses) as front:
            yield Cluster(replicas, front, settings_url)
    finally:
        for replica in replicas:
            if replica.process is not None:
                stop(replica.process)
