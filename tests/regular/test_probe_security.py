"""Issue 11 finding 13: the probe keeps the credentials of --url out of files and messages, and
copies artifacts only from inside its --cache-dir, whatever a backend answers.

The backend here is a capture server on loopback: it records what reaches it and answers what
the test tells it to, which a real SAM2Plus would never answer (an artifacts folder outside its
cache).
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import threading

import pytest

from probe import cli
from probe.errors import FAILED, ProbeError
from probe.outputs import copy_intermediates
from probe.transport import HttpTransport, split_credentials

USER, PASSWORD = "annotator", "s3cret-pässword"
GOOD_ANSWER = {"results": [{"result": [], "score": 0.0}], "model_version": "capture"}


@contextlib.contextmanager
def capture_backend(answers: dict[str, tuple[int, dict]]):
    """A loopback server answering POST /<route> with `answers[route]`; yields (port, requests seen)."""
    seen: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
            status, payload = answers.get(self.path.strip("/"), (404, {"error": "no such route"}))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def credentials_url(port: int) -> str:
    return f"http://{USER}:{PASSWORD.replace('ä', '%C3%A4')}@127.0.0.1:{port}"


def test_the_url_loses_its_user_info_which_becomes_the_sessions_auth():
    assert split_credentials("http://ann:p%40ss@127.0.0.1:9090/x") == ("http://127.0.0.1:9090/x", (b"ann", b"p@ss"))
    assert split_credentials("http://[::1]:9090") == ("http://[::1]:9090", None)
    transport = HttpTransport("http://ann:pw@localhost:22201/")
    assert transport.url == transport.description == "http://localhost:22201"
    assert transport.session.auth == (b"ann", b"pw")


def test_credentials_reach_the_backend_but_never_the_request_record_or_stdout(tmp_path, capsys):
    with capture_backend({"setup": (200, {"model_version": "capture"}), "predict": (200, GOOD_ANSWER)}) as (port, seen):
        code = cli.main(["--url", credentials_url(port), "--cache-dir", str(tmp_path / "cache"),
                         f"--request-record={tmp_path / 'rec'}", f"--output={tmp_path / 'out'}"])
    out, err = capsys.readouterr()
    assert code == 0, err
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert [request["headers"].get("Authorization") for request in seen] == [expected, expected]
    assert [request["path"] for request in seen] == ["/setup", "/predict"], "no user-info left in the path"
    record = (tmp_path / "rec" / "request.json").read_text()
    assert json.loads(record)["backend"] == f"http://127.0.0.1:{port}"
    written = "".join(path.read_text(errors="replace") for path in tmp_path.rglob("*.json"))
    for secret in ("s3cret", USER + ":"):
        assert secret not in written and secret not in out and secret not in err


@pytest.mark.parametrize("answers", [{}, {"setup": (401, {"error": "authorization: wrong"})}],
                         ids=["unreachable", "refused"])
def test_error_messages_never_carry_the_credentials(tmp_path, capsys, answers):
    with capture_backend(answers) as (port, _):
        url = credentials_url(port if answers else 9)  # port 9 (discard) on loopback: nobody listens
        code = cli.main(["--url", url, "--cache-dir", str(tmp_path / "cache"), "--timeout", "5",
                         f"--request-record={tmp_path / 'rec'}"])
    err = capsys.readouterr().err
    assert code == FAILED and "/setup" in err and ("127.0.0.1" in err or "HTTP 401" in err)
    assert "s3cret" not in err and "s3cret" not in (tmp_path / "rec" / "request.json").read_text()


@pytest.mark.parametrize("named", ["{outside}", "artifacts/../../outside", "artifacts/../{outside_name}",
                                   "/cache/artifacts/..", "/etc", "artifacts/link-out"])
def test_intermediates_are_copied_only_from_inside_the_cache_dir(tmp_path, named):
    """A backend naming a folder outside --cache-dir (today: any local folder was copied)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "id_rsa").write_text("PRIVATE KEY")
    cache = tmp_path / "cache"
    (cache / "artifacts").mkdir(parents=True)
    (cache / "artifacts" / "link-out").symlink_to(outside)
    answer = {**GOOD_ANSWER, "artifacts": named.format(outside=outside, outside_name=outside.name)}
    with pytest.raises(ProbeError) as refused:
        copy_intermediates(tmp_path / "copied", answer, cache)
    assert refused.value.exit_code == FAILED and str(refused.value).startswith("intermediates:")
    assert not list(tmp_path.glob("copied/*"))


def test_intermediates_skip_links_inside_the_artifact_folder(tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    folder = tmp_path / "cache" / "artifacts" / "20250101-120000-abc"
    folder.mkdir(parents=True)
    (folder / "patch.jpg").write_bytes(b"jpeg")
    (folder / "leak.txt").symlink_to(tmp_path / "secret.txt")
    written = copy_intermediates(tmp_path / "copied", {"artifacts": "artifacts/20250101-120000-abc"}, tmp_path / "cache")
    assert [path.name for path in written] == ["patch.jpg"]
