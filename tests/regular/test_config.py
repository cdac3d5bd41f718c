"""sam2plus.config: the backend's environment, with the contract's defaults and precise errors."""

from __future__ import annotations

import pytest

from sam2plus.config import ConfigError, ServerConfig


def test_an_empty_environment_gives_the_containers_defaults():
    config = ServerConfig.from_env({})
    assert config.device == "auto"
    assert config.model_config == "configs/sam2.1/sam2.1_hiera_l.yaml"
    assert config.model_checkpoint == "sam2.1_hiera_large.pt"
    assert (config.checkpoint_dir, config.cache_dir, config.model_dir) == (
        "/sam2/checkpoints",
        "/cache",
        "/data/models",
    )
    assert config.label_studio_url is None and config.label_studio_api_key is None
    assert config.image_hosts == () and config.basic_auth_user is None and config.artifacts == "off"
    assert config.artifacts_mb == 1024 and config.max_request_bytes == 128 << 20


def test_blank_values_count_as_unset():
    config = ServerConfig.from_env({"DEVICE": " ", "MODEL_CONFIG": "", "LABEL_STUDIO_URL": "", "MAX_IMAGE_PIXELS": ""})
    assert config == ServerConfig.from_env({})


def test_values_are_read_and_normalised():
    config = ServerConfig.from_env(
        {
            "DEVICE": "CUDA:1",
            "MODEL_CONFIG": "configs/sam2.1/sam2.1_hiera_t.yaml",
            "MODEL_CHECKPOINT": "untrained",
            "LABEL_STUDIO_URL": "http://ls.example:8080/",
            "LABEL_STUDIO_API_KEY": "key",
            "IMAGE_HOSTS": " Images.Example.org , cdn.example:8443 ,, ",
            "MAX_IMAGE_PIXELS": "1000",
            "FETCH_TIMEOUT": "2.5",
            "EMBEDDING_CACHE_MB": "64",
            "FRAME_CACHE_MB": "128",
            "ARTIFACTS": "on",
            "BASIC_AUTH_USER": "ann",
            "BASIC_AUTH_PASS": "pw",
            "ARTIFACTS_MB": "10",
            "MAX_REQUEST_BYTES": "1048576",
        }
    )
    assert config.device == "cuda:1"
    assert config.label_studio_url == "http://ls.example:8080"
    assert config.image_hosts == ("images.example.org", "cdn.example:8443")
    assert (config.max_image_pixels, config.fetch_timeout) == (1000, 2.5)
    assert (config.embedding_cache_mb, config.frame_cache_mb) == (64, 128)
    assert config.artifacts == "on" and (config.basic_auth_user, config.basic_auth_pass) == ("ann", "pw")
    assert (config.artifacts_mb, config.max_request_bytes) == (10, 1 << 20)


@pytest.mark.parametrize(
    "value, mode",
    [
        ("off", "off"),
        ("ON", "on"),
        ("request", "request"),
        ("Request", "request"),
        ("true", "on"),
        ("1", "on"),
        ("false", "off"),
        ("0", "off"),
    ],
)
def test_artifacts_is_off_on_or_request(value, mode):
    assert ServerConfig.from_env({"ARTIFACTS": value}).artifacts == mode


@pytest.mark.parametrize(
    "env, named",
    [
        ({"DEVICE": "gpu"}, "DEVICE='gpu'"),
        ({"ARTIFACTS": "maybe"}, "ARTIFACTS='maybe'"),
        ({"MAX_IMAGE_PIXELS": "lots"}, "MAX_IMAGE_PIXELS='lots'"),
        ({"MAX_IMAGE_BYTES": "0"}, "MAX_IMAGE_BYTES='0'"),
        ({"FETCH_TIMEOUT": "-1"}, "FETCH_TIMEOUT='-1'"),
        ({"EMBEDDING_CACHE_MB": "1.5"}, "EMBEDDING_CACHE_MB='1.5'"),
        ({"ARTIFACTS_MB": "-5"}, "ARTIFACTS_MB='-5'"),
        ({"MAX_REQUEST_BYTES": "64MB"}, "MAX_REQUEST_BYTES='64MB'"),
        # issue 11 finding 10: a user with an empty password accepted the empty password
        ({"BASIC_AUTH_USER": "ann"}, "BASIC_AUTH_USER is set but BASIC_AUTH_PASS is empty"),
        ({"BASIC_AUTH_USER": "ann", "BASIC_AUTH_PASS": "  "}, "BASIC_AUTH_USER is set but BASIC_AUTH_PASS is empty"),
        ({"BASIC_AUTH_PASS": "pw"}, "BASIC_AUTH_PASS is set but BASIC_AUTH_USER is empty"),
    ],
)
def test_a_bad_setting_stops_the_start_naming_it(env, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        ServerConfig.from_env(env)


def test_a_config_built_in_code_is_checked_too():
    with pytest.raises(ConfigError, match="BASIC_AUTH_PASS is empty"):
        ServerConfig(basic_auth_user="ann", basic_auth_pass="")
    with pytest.raises(ConfigError, match="ARTIFACTS='always' must be off, on or request"):
        ServerConfig(artifacts="always")
