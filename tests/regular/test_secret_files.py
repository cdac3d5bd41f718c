"""Secrets from files (issue 25): LABEL_STUDIO_API_KEY, BASIC_AUTH_PASS and SETTINGS_URL may each be
given as NAME_FILE, a file holding the value (a Compose secret, a mounted folder), read only when
NAME itself is blank, bounded in size; a file that cannot be used stops the start naming the variable."""

from __future__ import annotations

import pytest

from sam2plus.config import SECRET_FILE_BYTES, ConfigError, ServerConfig

SECRETS = ("LABEL_STUDIO_API_KEY", "BASIC_AUTH_PASS", "SETTINGS_URL")
VALUES = {
    "LABEL_STUDIO_API_KEY": "0123456789abcdef",
    "BASIC_AUTH_PASS": "pass word with spaces",
    "SETTINGS_URL": "postgresql://sam2plus:s3cret@settings-db:5432/sam2plus",
}
FIELDS = {
    "LABEL_STUDIO_API_KEY": "label_studio_api_key",
    "BASIC_AUTH_PASS": "basic_auth_pass",
    "SETTINGS_URL": "settings_url",
}


def with_user(env: dict) -> dict:
    return {"BASIC_AUTH_USER": "sam2plus", **env} if "BASIC_AUTH_PASS" in " ".join(env) else env


@pytest.mark.parametrize("name", SECRETS)
def test_a_secret_is_read_from_its_file_without_the_trailing_newline(tmp_path, name):
    path = tmp_path / name.lower()
    path.write_text(VALUES[name] + "\n")
    config = ServerConfig.from_env(with_user({f"{name}_FILE": str(path)}))
    assert getattr(config, FIELDS[name]) == VALUES[name]


@pytest.mark.parametrize("name", SECRETS)
def test_the_variable_itself_wins_over_its_file(tmp_path, name):
    config = ServerConfig.from_env(with_user({name: VALUES[name], f"{name}_FILE": str(tmp_path / "missing")}))
    assert getattr(config, FIELDS[name]) == VALUES[name]


@pytest.mark.parametrize("name", SECRETS)
def test_a_file_that_cannot_be_read_stops_the_start_naming_the_variable(tmp_path, name):
    with pytest.raises(ConfigError) as raised:
        ServerConfig.from_env(with_user({f"{name}_FILE": str(tmp_path / "missing")}))
    assert f"{name}_FILE='{tmp_path / 'missing'}' cannot be read (No such file or directory)" in str(raised.value)


def test_a_file_larger_than_a_secret_is_refused_without_reading_it_whole(tmp_path):
    path = tmp_path / "huge"
    with open(path, "wb") as handle:
        handle.truncate(1 << 30)  # sparse: 1 GiB that costs no disk
    with pytest.raises(ConfigError, match=f"BASIC_AUTH_PASS_FILE=.* holds more than {SECRET_FILE_BYTES} bytes"):
        ServerConfig.from_env({"BASIC_AUTH_USER": "sam2plus", "BASIC_AUTH_PASS_FILE": str(path)})


def test_a_file_that_is_not_text_is_refused(tmp_path):
    path = tmp_path / "binary"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="LABEL_STUDIO_API_KEY_FILE=.* is not UTF-8 text"):
        ServerConfig.from_env({"LABEL_STUDIO_API_KEY_FILE": str(path)})


def test_an_empty_file_counts_as_unset(tmp_path):
    path = tmp_path / "empty"
    path.write_text("\n")
    with pytest.raises(ConfigError, match="BASIC_AUTH_USER is set but BASIC_AUTH_PASS is empty"):
        ServerConfig.from_env({"BASIC_AUTH_USER": "sam2plus", "BASIC_AUTH_PASS_FILE": str(path)})
