"""The probe and the backend's artifact route against hostile input.

Issue 11 finding 13: the probe keeps the credentials of --url out of files and messages, and
copies artifacts only from inside its --cache-dir, whatever a backend answers. Issue 14:
`GET /artifacts/<id>[/<name>]` serves only regular files of one request folder inside
CACHE_DIR/artifacts, behind basic auth, and nothing with ARTIFACTS=off; the probe writes only
plain file names a backend lists.

The hostile backend here is a capture server on loopback (tests/support/capture.py): it answers
what the test tells it to, which a real SAM2Plus would never answer.
"""

from __future__ import annotations

import base64
import http.client
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from model import SAM2Plus
from probe import cli
from probe.errors import FAILED, ProbeError
from probe.outputs import copy_intermediates, download_intermediates
from probe.transport import HttpTransport, split_credentials
from sam2plus.config import ServerConfig
from sam2plus.server import create_app
from tests.support.capture import capture_backend
from tests.support.geometry_segmenter import ColorRegionSegmenter
from tests.support.servers import wsgi_server

USER, PASSWORD = "annotator", "s3cret-pässword"
GOOD_ANSWER = {"results": [{"result": [], "score": 0.0}], "model_version": "capture"}


def credentials_url(url: str) -> str:
    return url.replace("http://", f"http://{USER}:{PASSWORD.replace('ä', '%C3%A4')}@")


def test_the_url_loses_its_user_info_which_becomes_the_sessions_auth():
    assert split_credentials("http://ann:p%40ss@127.0.0.1:9090/x") == ("http://127.0.0.1:9090/x", (b"ann", b"p@ss"))
    assert split_credentials("http://[::1]:9090") == ("http://[::1]:9090", None)
    transport = HttpTransport("http://ann:pw@localhost:22201/")
    assert transport.url == transport.description == "http://localhost:22201"
    assert transport.session.auth == (b"ann", b"pw")


def test_credentials_reach_the_backend_but_never_the_request_record_or_stdout(tmp_path, capsys):
    with capture_backend({"setup": (200, {"model_version": "capture"}), "predict": (200, GOOD_ANSWER)}) as (url, seen):
        code = cli.main(
            ["--url", credentials_url(url), f"--request-record={tmp_path / 'rec'}", f"--output={tmp_path / 'out'}"]
        )
    out, err = capsys.readouterr()
    assert code == 0, err
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert [request["headers"].get("Authorization") for request in seen] == [expected, expected]
    assert [request["path"] for request in seen] == ["/setup", "/predict"], "no user-info left in the path"
    record = (tmp_path / "rec" / "request.json").read_text()
    assert json.loads(record)["backend"] == url
    written = "".join(path.read_text(errors="replace") for path in tmp_path.rglob("*.json"))
    for secret in ("s3cret", USER + ":"):
        assert secret not in written and secret not in out and secret not in err


@pytest.mark.parametrize(
    "answers", [{}, {"setup": (401, {"error": "authorization: wrong"})}], ids=["unreachable", "refused"]
)
def test_error_messages_never_carry_the_credentials(tmp_path, capsys, answers):
    with capture_backend(answers) as (url, _):
        url = credentials_url(url if answers else "http://127.0.0.1:9")  # port 9 (discard) on loopback: nobody listens
        code = cli.main(["--url", url, "--timeout", "5", f"--request-record={tmp_path / 'rec'}"])
    err = capsys.readouterr().err
    assert code == FAILED and "/setup" in err and ("127.0.0.1" in err or "HTTP 401" in err)
    assert "s3cret" not in err and "s3cret" not in (tmp_path / "rec" / "request.json").read_text()


@pytest.mark.parametrize(
    "named",
    [
        "{outside}",
        "artifacts/../../outside",
        "artifacts/../{outside_name}",
        "/cache/artifacts/..",
        "/etc",
        "artifacts/link-out",
    ],
)
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
    answer = {"artifacts": "artifacts/20250101-120000-abc"}
    written = copy_intermediates(tmp_path / "copied", answer, tmp_path / "cache")
    assert [path.name for path in written] == ["patch.jpg"]


# --- GET /artifacts: the backend's review images over HTTP -----------------------------------

IDENT = "20260101-120000-" + "a" * 32
SECRETS = (b"contents of a file outside", b"PRIVATE KEY", b"cached image")  # what no answer may hold


def artifact_backend(tmp_path: Path, artifacts: str = "request", user: str | None = None, password: str | None = None):
    """The backend's own app with one request folder of artifacts, and traps around it: a link to a
    file outside, a link to a folder outside, a partial file, a sub-folder, a cached download."""
    cache = tmp_path / "cache"
    folder = cache / "artifacts" / IDENT
    folder.mkdir(parents=True)
    (folder / "patch.jpg").write_bytes(b"patch")
    (folder / "request.json").write_text('{"image_size": [10, 10]}')
    (folder / ".part-x1").write_bytes(b"partial")
    (folder / "sub").mkdir()
    (tmp_path / "secret.txt").write_text("contents of a file outside")
    (folder / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "id_rsa").write_text("PRIVATE KEY")
    (cache / "artifacts" / "linked").symlink_to(tmp_path / "outside")
    (cache / "downloads").mkdir()
    (cache / "downloads" / "img.jpg").write_text("cached image")
    config = ServerConfig(
        cache_dir=str(cache),
        model_dir=str(tmp_path / "models"),
        artifacts=artifacts,
        basic_auth_user=user,
        basic_auth_pass=password,
    )
    return create_app(SAM2Plus(config, segmenter=ColorRegionSegmenter()))


def raw_get(url: str, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    """GET `path` exactly as written (no client-side normalisation of `..` or percent escapes)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_the_artifact_route_lists_and_serves_only_the_regular_files_of_one_request_folder(tmp_path):
    with wsgi_server(artifact_backend(tmp_path)) as url:
        status, body = raw_get(url, f"/artifacts/{IDENT}")
        assert status == 200 and json.loads(body) == {"files": ["patch.jpg", "request.json"]}
        assert raw_get(url, f"/artifacts/{IDENT}/patch.jpg") == (200, b"patch")
        assert raw_get(url, f"/artifacts/{IDENT}/request.json") == (200, b'{"image_size": [10, 10]}')


@pytest.mark.parametrize(
    "path",
    [
        f"/artifacts/{IDENT}/leak.txt",  # a link inside the folder
        f"/artifacts/{IDENT}/.part-x1",  # a partial file
        f"/artifacts/{IDENT}/sub",  # a folder
        f"/artifacts/{IDENT}/missing.jpg",
        "/artifacts/linked",
        "/artifacts/linked/id_rsa",  # a linked folder
        "/artifacts/..",
        "/artifacts/../downloads/img.jpg",
        "/artifacts/%2e%2e/downloads",
        "/artifacts/..%2Fdownloads/img.jpg",
        "/artifacts/%2E%2E%2F%2E%2E%2Fsecret.txt",
        f"/artifacts/{IDENT}/..%2F..%2Fdownloads%2Fimg.jpg",
        f"/artifacts/{IDENT}/%2e%2e",
        f"/artifacts/{IDENT}/..%5C..%5Csecret.txt",
        "/artifacts/downloads",
        "/artifacts/.",
        "/artifacts/%00",
        f"/artifacts/{IDENT}/patch.jpg%00.txt",
        "/artifacts//etc/passwd",
        "/artifacts/%2Fetc%2Fpasswd",
    ],
)
def test_the_artifact_route_refuses_everything_else(tmp_path, path):
    with wsgi_server(artifact_backend(tmp_path)) as url:
        status, body = raw_get(url, path)
    assert status in (404, 308), (status, body)  # 308: werkzeug's redirect of a doubled slash, to a 404
    assert not any(secret in body for secret in SECRETS), body


def test_the_artifact_route_is_behind_basic_auth(tmp_path):
    auth = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
    with wsgi_server(artifact_backend(tmp_path, user=USER, password=PASSWORD)) as url:
        for path in (f"/artifacts/{IDENT}", f"/artifacts/{IDENT}/patch.jpg"):
            status, body = raw_get(url, path)
            assert status == 401 and b"patch" not in body
        assert raw_get(url, f"/artifacts/{IDENT}/patch.jpg", auth) == (200, b"patch")
        transport = HttpTransport(credentials_url(url))
        assert transport.artifact_names(IDENT) == ["patch.jpg", "request.json"]


def test_a_backend_with_artifacts_off_serves_none(tmp_path):
    with wsgi_server(artifact_backend(tmp_path, artifacts="off")) as url:
        for path in (f"/artifacts/{IDENT}", f"/artifacts/{IDENT}/patch.jpg"):
            status, body = raw_get(url, path)
            assert status == 404 and b"ARTIFACTS=off" in body and b"patch" not in body.replace(b"/patch", b"")


@pytest.mark.parametrize(
    "listed", [["../../evil.txt"], ["..", "patch.jpg"], ["/etc/passwd"], [".bashrc"], ["sub/x.jpg"], [7]]
)
def test_the_probe_writes_only_plain_file_names_a_backend_lists(tmp_path, listed):
    ident = "20260101-120000-abc"
    with capture_backend(
        {f"GET /artifacts/{ident}": (200, {"files": listed}), f"GET /artifacts/{ident}/patch.jpg": (200, b"jpeg")}
    ) as (url, seen):
        with pytest.raises(ProbeError) as refused:
            download_intermediates(tmp_path / "mid" / "copied", ident, HttpTransport(url))
    assert refused.value.exit_code == FAILED and "not a plain file name" in str(refused.value)
    assert [request["path"] for request in seen] == [f"/artifacts/{ident}"], "no file was asked for"
    assert not (tmp_path / "mid").exists() and not (tmp_path / "evil.txt").exists()


def test_an_artifacts_folder_named_outside_is_never_asked_for(tmp_path, capsys):
    answer = {**GOOD_ANSWER, "artifacts": "artifacts/../../etc"}
    with capture_backend({"setup": (200, {}), "predict": (200, answer)}) as (url, seen):
        code = cli.main(["--url", url, f"--intermediates={tmp_path / 'mid'}"])
    assert code == FAILED and "intermediates: the backend named" in capsys.readouterr().err
    assert [request["path"] for request in seen] == ["/setup", "/predict"]
    assert not (tmp_path / "mid").exists()
