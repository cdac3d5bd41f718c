"""scripts/download-checkpoints.py against a checkpoint mirror on loopback.

In-process tests swap the real checkpoint table for small fake files; command-line tests
keep the real table and never let a real-sized download complete.
"""

import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "download-checkpoints.py"
PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def load_script():
    spec = importlib.util.spec_from_file_location("download_checkpoints", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dl = load_script()
NAMES = list(dl.CHECKPOINTS)


class MirrorHandler(BaseHTTPRequestHandler):
    """Serves server.files[name] at /checkpoints/<name>; server.modes[name] breaks the
    transfer (truncate, stall), server.announced[name] sends a wrong Content-Length."""

    def do_GET(self):
        name = self.path.removeprefix("/checkpoints/")
        self.server.requests.append(name)
        body = self.server.files.get(name) if self.path.startswith("/checkpoints/") else None
        if body is None:
            self.send_error(404)
            return
        mode = self.server.modes.get(name)
        announced = self.server.announced.get(name, len(body))
        self.send_response(200)
        self.send_header("Content-Length", str(announced))
        self.end_headers()
        if mode == "truncate":
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif mode == "stall":
            self.wfile.write(body[:1024])
            self.wfile.flush()
            self.server.release.wait(30)
        else:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(monkeypatch):
    """A loopback HTTP server serving server.files under server.url."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
    server.daemon_threads = True
    server.files, server.modes, server.announced, server.requests = {}, {}, {}, []
    server.release = threading.Event()
    server.url = f"http://127.0.0.1:{server.server_port}/checkpoints/"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake_checkpoints(monkeypatch, mirror):
    """Small distinct files in place of the four checkpoints, served by the mirror."""
    bodies = {name: os.urandom(50_000 + 1000 * i) for i, name in enumerate(NAMES)}
    monkeypatch.setattr(dl, "CHECKPOINTS", {n: (len(b), hashlib.sha256(b).hexdigest()) for n, b in bodies.items()})
    mirror.files.update(bodies)
    return bodies


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_downloads_all_four_checkpoints_and_verifies_them(tmp_path, mirror, fake_checkpoints):
    dl.download(tmp_path / "store", NAMES, mirror.url)
    assert leftovers(tmp_path / "store") == sorted(NAMES)
    for name, body in fake_checkpoints.items():
        assert (tmp_path / "store" / name).read_bytes() == body
    assert mirror.requests == NAMES


def test_skips_checkpoints_already_present(tmp_path, mirror, fake_checkpoints):
    kept = b"k" * len(fake_checkpoints[NAMES[0]])  # right size: taken as present, not re-read
    (tmp_path / NAMES[0]).write_bytes(kept)
    dl.download(tmp_path, NAMES, mirror.url)
    assert mirror.requests == NAMES[1:]
    assert (tmp_path / NAMES[0]).read_bytes() == kept


def test_replaces_a_file_of_the_wrong_size(tmp_path, mirror, fake_checkpoints):
    (tmp_path / NAMES[0]).write_bytes(b"half a file")
    dl.download(tmp_path, NAMES[:1], mirror.url)
    assert (tmp_path / NAMES[0]).read_bytes() == fake_checkpoints[NAMES[0]]


def test_interrupted_transfer_leaves_no_partial_file(tmp_path, mirror, fake_checkpoints):
    mirror.modes[NAMES[1]] = "truncate"
    with pytest.raises(dl.DownloadError, match=NAMES[1]):
        dl.download(tmp_path, NAMES, mirror.url)
    assert leftovers(tmp_path) == [NAMES[0]]


def test_corrupted_download_is_rejected_by_its_sha256(tmp_path, mirror, fake_checkpoints):
    body = fake_checkpoints[NAMES[0]]
    mirror.files[NAMES[0]] = bytes([body[0] ^ 1]) + body[1:]
    with pytest.raises(dl.DownloadError, match="SHA-256"):
        dl.download(tmp_path, NAMES[:1], mirror.url)
    assert leftovers(tmp_path) == []


def test_announced_size_other_than_expected_is_rejected(tmp_path, mirror, fake_checkpoints):
    mirror.announced[NAMES[0]] = len(fake_checkpoints[NAMES[0]]) + 1
    with pytest.raises(dl.DownloadError, match="announces"):
        dl.download(tmp_path, NAMES[:1], mirror.url)
    assert leftovers(tmp_path) == []


def test_missing_file_on_the_server_is_an_error(tmp_path, mirror, fake_checkpoints):
    del mirror.files[NAMES[2]]
    with pytest.raises(dl.DownloadError, match="404"):
        dl.download(tmp_path, NAMES[2:3], mirror.url)
    assert leftovers(tmp_path) == []


def test_default_source_is_the_sam2_release_host():
    assert dl.DEFAULT_BASE_URL == "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
    assert NAMES == [f"sam2.1_hiera_{size}.pt" for size in ("tiny", "small", "base_plus", "large")]


# The command line, with the real checkpoint table.


def run_cli(*args, base_url, background=False):
    """Run the script with SAM2_CHECKPOINT_BASE_URL=base_url; background: return the Popen."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env["SAM2_CHECKPOINT_BASE_URL"] = base_url
    command = [sys.executable, str(SCRIPT), *map(str, args)]
    if background:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def place_real_sized_checkpoints(directory: Path):
    """Sparse files of the real sizes: present as far as the script can tell, no disk used."""
    for name, (size, _) in dl.CHECKPOINTS.items():
        with open(directory / name, "wb") as f:
            f.truncate(size)


def closed_port_url():
    """A loopback URL nobody listens on: any download attempt fails at once."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
    port = server.server_port
    server.server_close()
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("absolute", [False, True], ids=["file-name", "absolute-path"])
def test_cli_if_missing_does_nothing_when_the_checkpoint_is_present(tmp_path, absolute):
    (tmp_path / "sam2.1_hiera_large.pt").write_bytes(b"anything")
    checkpoint = tmp_path / "sam2.1_hiera_large.pt" if absolute else "sam2.1_hiera_large.pt"
    result = run_cli(tmp_path, "--if-missing", checkpoint, base_url=closed_port_url())
    assert result.returncode == 0, result.stderr
    assert "nothing to download" in result.stdout
    assert leftovers(tmp_path) == ["sam2.1_hiera_large.pt"]


def test_cli_if_missing_untrained_needs_no_checkpoint(tmp_path):
    result = run_cli(tmp_path / "store", "--if-missing", "untrained", base_url=closed_port_url())
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "store").exists()


def test_cli_skips_present_checkpoints_without_network(tmp_path):
    place_real_sized_checkpoints(tmp_path)
    result = run_cli(tmp_path, base_url=closed_port_url())
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("skip ") == 4


def test_cli_fails_when_the_wanted_checkpoint_is_not_downloadable(tmp_path):
    place_real_sized_checkpoints(tmp_path)
    result = run_cli(tmp_path, "--if-missing", "custom.pt", base_url=closed_port_url())
    assert result.returncode == 1
    assert "custom.pt is not a downloadable checkpoint" in result.stderr


def test_cli_refuses_an_unknown_checkpoint_name(tmp_path):
    result = run_cli(tmp_path, "sam2.1_hiera_huge.pt", base_url=closed_port_url())
    assert result.returncode == 2
    assert "unknown checkpoint(s) sam2.1_hiera_huge.pt" in result.stderr


def test_cli_rejects_a_file_of_another_size_and_keeps_nothing(tmp_path, mirror):
    mirror.files["sam2.1_hiera_tiny.pt"] = b"not a checkpoint"
    result = run_cli(tmp_path, "sam2.1_hiera_tiny.pt", base_url=mirror.url)
    assert result.returncode == 1
    assert "expected 156008466" in result.stderr
    assert leftovers(tmp_path) == []


def test_cli_stopped_mid_transfer_leaves_no_partial_file(tmp_path, mirror):
    size, _ = dl.CHECKPOINTS["sam2.1_hiera_tiny.pt"]
    mirror.files["sam2.1_hiera_tiny.pt"] = b"\0" * 4096
    mirror.announced["sam2.1_hiera_tiny.pt"] = size
    mirror.modes["sam2.1_hiera_tiny.pt"] = "stall"
    proc = run_cli(tmp_path, "sam2.1_hiera_tiny.pt", base_url=mirror.url, background=True)
    try:
        part = tmp_path / "sam2.1_hiera_tiny.pt.part"
        deadline = time.monotonic() + 20
        while not part.exists() and time.monotonic() < deadline:  # created once the headers arrived
            time.sleep(0.05)
        assert part.exists(), "the download never started"
        proc.send_signal(signal.SIGTERM)  # what `docker stop` sends
        assert proc.wait(timeout=20) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert leftovers(tmp_path) == []


def test_cli_names_a_store_it_cannot_write_before_any_download():
    """As the image's user (uid 1000) when run as root, otherwise with the store made read-only:
    the message names the folder, the user and the way out, and no request is sent."""
    root = Path(tempfile.mkdtemp())  # not under tmp_path: uid 1000 must be able to reach it
    try:
        root.chmod(0o755)
        (root / "store").mkdir(mode=0o755)
        as_root = os.geteuid() == 0
        if not as_root:
            (root / "store").chmod(0o555)
        env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
        env["SAM2_CHECKPOINT_BASE_URL"] = closed_port_url()
        result = subprocess.run(
            # Debian's python3 (stdlib only, as in the image): uid 1000 may not reach the venv's interpreter.
            [
                "/usr/bin/python3" if as_root else sys.executable,
                str(SCRIPT),
                str(root / "store"),
                "sam2.1_hiera_tiny.pt",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            **({"user": 1000, "group": 1000, "extra_groups": []} if as_root else {}),
        )
        assert result.returncode == 1
        uid = 1000 if as_root else os.geteuid()
        assert result.stderr.startswith(
            f"error: {root / 'store'} is not writable by uid {uid}, so sam2.1_hiera_tiny.pt cannot be downloaded:"
        ), result.stderr
        assert "fetch " not in result.stdout
    finally:
        shutil.rmtree(root)
