#!/usr/bin/env bash
# The replicas' PostgreSQL role (replicas-compose.yml; docs/scaling-out.md): `sam2plus` logs in with
# the password in SETTINGS_DB_PASSWORD_FILE and owns its table, in its own schema, and nothing else:
# no superuser, no other database, no role, no object in `public`. The backend creates its table
# there on its first connection (CREATE TABLE IF NOT EXISTS needs CREATE on the schema).
#
# Run once, by the superuser, when the database is first made: the postgres image runs it from
# /docker-entrypoint-initdb.d (POSTGRES_USER and POSTGRES_DB set, psql on its socket); the tests run
# it against their own PostgreSQL (tests/support/postgres.py), with PGHOST and PGPORT set.
set -euo pipefail
: "${POSTGRES_USER:?the superuser}" "${POSTGRES_DB:?the database}" "${SETTINGS_DB_PASSWORD_FILE:?the role password file}"
password=$(head -c 4096 "$SETTINGS_DB_PASSWORD_FILE" | tr -d '\r\n')
[[ -n $password ]] || { echo "settings-db-role.sh: $SETTINGS_DB_PASSWORD_FILE is empty" >&2; exit 1; }

psql -v ON_ERROR_STOP=1 -q --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v password="$password" -v db="$POSTGRES_DB" -v superuser="$POSTGRES_USER" <<'SQL'
CREATE ROLE sam2plus LOGIN PASSWORD :'password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT CONNECTION LIMIT 64;
-- Only the superuser and sam2plus connect; nobody else gets temporary tables or the public schema.
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO sam2plus;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
-- Its schema, owned by the superuser: sam2plus may create its table there, and owns only that.
CREATE SCHEMA sam2plus AUTHORIZATION :"superuser";
REVOKE ALL ON SCHEMA sam2plus FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA sam2plus TO sam2plus;
ALTER ROLE sam2plus IN DATABASE :"db" SET search_path = sam2plus;
SQL
