"""scripts/clean-env-secrets.py, alone and as the real `envsecrets` git clean filter."""

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "clean-env-secrets.py"


def clean(data: bytes) -> bytes:
    return subprocess.run([sys.executable, str(SCRIPT)], input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize(
    "line, staged",
    [
        (b"LABEL_STUDIO_API_KEY=abc123\n", b"LABEL_STUDIO_API_KEY=\n"),
        (b"LABEL_STUDIO_ACCESS_TOKEN=eyJhbGciOi.x.y\n", b"LABEL_STUDIO_ACCESS_TOKEN=\n"),
        (b"BASIC_AUTH_PASS=hunter2\r\n", b"BASIC_AUTH_PASS=\r\n"),
        (b"LABEL_STUDIO_API_KEY=abc  # personal token\n", b"LABEL_STUDIO_API_KEY=  # personal token\n"),
        (b'export BASIC_AUTH_PASS="p\\"w #1" # note\n', b'export BASIC_AUTH_PASS="" # note\n'),
        (b"LABEL_STUDIO_API_KEY='abc'\n", b"LABEL_STUDIO_API_KEY=''\n"),
        (b"  LABEL_STUDIO_API_KEY = abc\n", b"  LABEL_STUDIO_API_KEY =\n"),
        (b'LABEL_STUDIO_API_KEY="unterminated\n', b"LABEL_STUDIO_API_KEY=\n"),
        (b"# LABEL_STUDIO_API_KEY=old-key\n", b"# LABEL_STUDIO_API_KEY=\n"),
        (b"LABEL_STUDIO_API_KEY=no-final-newline", b"LABEL_STUDIO_API_KEY="),
    ],
)
def test_secret_values_are_blanked(line, staged):
    assert clean(line) == staged


@pytest.mark.parametrize(
    "line",
    [
        b"LABEL_STUDIO_URL=https://ls.example.org:8080/\n",
        b"BASIC_AUTH_USER=annotator\n",
        b"BASIC_AUTH_PASSWORD_HINT=kept\n",
        b"LABEL_STUDIO_API_KEY_FILE=/run/secrets/key\n",
        b"# a comment about LABEL_STUDIO_API_KEY\n",
        b"LABEL_STUDIO_API_KEY=\n",
        b"\n",
        b"  \t\r\n",
        b"NOTE=caf\xe9 \xff not utf-8\r\n",
    ],
)
def test_other_lines_pass_byte_for_byte(line):
    assert clean(line) == line


@pytest.mark.parametrize("target", sorted(path.name for path in (REPO / "envs").glob("*.env")))
def test_a_shipped_target_file_with_its_secrets_entered_is_staged_as_shipped(target):
    """Basic auth is on in every shipped target: its password, entered after a clone, never reaches git."""
    shipped = (REPO / "envs" / target).read_bytes()
    assert b"\nBASIC_AUTH_PASS=\n" in shipped and b"\nLABEL_STUDIO_API_KEY=\n" in shipped
    entered = shipped.replace(b"\nBASIC_AUTH_PASS=\n", b"\nBASIC_AUTH_PASS=correct-horse\n")
    entered = entered.replace(b"\nLABEL_STUDIO_API_KEY=\n", b"\nLABEL_STUDIO_API_KEY=0123456789abcdef\n")
    assert clean(entered) == shipped


@pytest.fixture
def repo(tmp_path):
    """A git repository with this project's .gitattributes and filter, set up as docs/deployment.md says."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "scripts" / SCRIPT.name)
    shutil.copy(REPO / ".gitattributes", root / ".gitattributes")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}

    def git(*args: str) -> bytes:
        return subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, check=True).stdout

    git("init", "-q")
    git("config", "user.email", "ci@example.org")
    git("config", "user.name", "CI")
    git("config", "filter.envsecrets.clean", f"{shlex.quote(sys.executable)} scripts/clean-env-secrets.py")
    git("config", "filter.envsecrets.smudge", "cat")
    git("config", "filter.envsecrets.required", "true")
    git.root = root
    return git


TARGET = (
    b"# target brick\n"
    b"CONTAINER_NAME=sam2plus-brick\r\n"
    b"HOST_PORT=22202\n"
    b"LABEL_STUDIO_URL=https://brick.example.org\n"
    b"LABEL_STUDIO_API_KEY=0123456789abcdef  # admin token\n"
    b"BASIC_AUTH_USER=annotator\n"
    b'BASIC_AUTH_PASS="s3cret"\n'
)
TARGET_STAGED = (
    b"# target brick\n"
    b"CONTAINER_NAME=sam2plus-brick\r\n"
    b"HOST_PORT=22202\n"
    b"LABEL_STUDIO_URL=https://brick.example.org\n"
    b"LABEL_STUDIO_API_KEY=  # admin token\n"
    b"BASIC_AUTH_USER=annotator\n"
    b'BASIC_AUTH_PASS=""\n'
)


def test_staged_env_files_are_redacted_and_the_working_tree_keeps_the_secret(repo):
    (repo.root / "envs").mkdir()
    (repo.root / "envs" / "brick.env").write_bytes(TARGET)
    (repo.root / ".env").write_bytes(b"IMAGE=sam2plus:latest\nLABEL_STUDIO_ACCESS_TOKEN=tok\n")
    repo("add", "-A")
    assert repo("show", ":envs/brick.env") == TARGET_STAGED
    assert repo("show", ":.env") == b"IMAGE=sam2plus:latest\nLABEL_STUDIO_ACCESS_TOKEN=\n"
    assert (repo.root / "envs" / "brick.env").read_bytes() == TARGET
    repo("commit", "-q", "-m", "targets")
    assert b"0123456789abcdef" not in repo("log", "-p", "--all")
    assert repo("status", "--porcelain") == b""


def test_secrets_re_entered_after_a_clone_vanish_from_status_after_renormalize(repo):
    (repo.root / "brick.env").write_bytes(TARGET_STAGED)
    repo("add", "-A")
    repo("commit", "-q", "-m", "redacted target")
    (repo.root / "brick.env").write_bytes(TARGET)
    assert repo("status", "--porcelain") == b" M brick.env\n"
    repo("add", "--renormalize", ".")
    assert repo("status", "--porcelain") == b""
    assert repo("show", ":brick.env") == TARGET_STAGED


def test_files_that_are_not_env_files_are_not_filtered(repo):
    (repo.root / "notes.txt").write_bytes(b"LABEL_STUDIO_API_KEY=abc\n")
    repo("add", "notes.txt")
    assert repo("show", ":notes.txt") == b"LABEL_STUDIO_API_KEY=abc\n"
