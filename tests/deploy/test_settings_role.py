"""The replicas' PostgreSQL role owns its table and nothing else (issue 25): the backend logged in to
the settings database as its superuser, so a leaked SETTINGS_URL (or a flaw in the backend) gave
the whole server: every database, COPY ... TO PROGRAM (a shell as the postgres user), new roles.

The shipped scripts/settings-db-role.sh makes the role, as replicas-compose.yml's settings-db runs it
when it first makes its database; tests/support/postgres.py runs it against Debian's PostgreSQL 15.
The backend's own settings store then works as that role: it creates its table and owns it."""

from __future__ import annotations

import psycopg
import pytest

from sam2plus.params import parse_extra_params
from sam2plus.settings import open_settings
from tests.support.postgres import postgres_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def stored(postgres, tmp_path_factory):
    """The backend's store on the role's URL, with one project's settings written through it."""
    store = open_settings(postgres.url, tmp_path_factory.mktemp("models"))
    store.save("7", parse_extra_params({"return_format": {"type": "BrushLabels"}}))
    return store


def refused(url: str, statement: str) -> str:
    """The error PostgreSQL answers `statement` with, run as the user of `url` ("" when it ran)."""
    with psycopg.connect(url, autocommit=True) as db:
        try:
            db.execute(statement)
        except psycopg.Error as exc:
            return str(exc).splitlines()[0]
    return ""


def test_the_backend_stores_settings_as_the_role_which_owns_its_table_only(postgres, stored):
    assert stored.load("7").return_format.type == "BrushLabels"
    with psycopg.connect(postgres.url, autocommit=True) as db:
        role = db.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user")
        assert role.fetchone() == (False, False, False)
        owned = db.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE pg_get_userbyid(c.relowner) = current_user"
        ).fetchall()
    # The table and what PostgreSQL makes with it (its primary key's index, its TOAST table).
    assert {(schema, name) for schema, name, kind in owned if kind == "r"} == {("sam2plus", "project_params")}
    assert {kind for *_, kind in owned} <= {"r", "i", "t"}


@pytest.mark.parametrize(
    "statement, error",
    [
        ("CREATE TABLE public.other (x int)", "permission denied for schema public"),
        ("CREATE DATABASE other", "permission denied to create database"),
        ("CREATE ROLE other LOGIN", "permission denied to create role"),
        ("COPY (SELECT 1) TO PROGRAM 'id'", "must be superuser or have privileges of the pg_execute_server_program"),
        ("SELECT rolpassword FROM pg_authid", "permission denied for table pg_authid"),
        ("CREATE TEMPORARY TABLE scratch (x int)", "permission denied to create temporary tables"),
        ("ALTER ROLE sam2plus SUPERUSER", "must be superuser to alter superuser roles"),
    ],
    ids=["public schema", "database", "role", "program", "passwords", "temporary", "superuser"],
)
def test_the_role_can_do_nothing_else(postgres, stored, statement, error):
    """Each of these ran as the superuser the backend logged in as before (checked with the admin URL)."""
    assert error in refused(postgres.url, statement)


def test_the_superuser_could_do_each_of_these(postgres):
    """The reproduction: what the old SETTINGS_URL (a superuser) allowed, from the same database."""
    assert refused(postgres.admin_url, "COPY (SELECT 1) TO PROGRAM 'cat > /dev/null'") == ""
    assert refused(postgres.admin_url, "CREATE TABLE public.other (x int)") == ""
    with psycopg.connect(postgres.admin_url, autocommit=True) as db:
        assert db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)


def test_other_roles_cannot_connect_to_the_settings_database(postgres):
    with psycopg.connect(postgres.admin_url, autocommit=True) as db:
        db.execute("CREATE ROLE stranger LOGIN PASSWORD 'stranger-pass'")
    url = postgres.url.replace("sam2plus:", "stranger:", 1).replace(":s3cret-for-tests@", ":stranger-pass@")
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(url).close()
