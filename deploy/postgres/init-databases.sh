#!/usr/bin/env bash
# The postgres image runs this once, when it starts on an empty data volume
# (/docker-entrypoint-initdb.d). One login role and one database per service, each owning
# its own: a service can neither read nor connect to the other's tables (SPEC section 2).
#   CRM_DB_PASSWORD, CEM_DB_PASSWORD  passwords of the `crm` and `cem` roles (required)
set -euo pipefail

create_service_database() {
  local name="$1" password="$2"
  # psql variables (:"name", :'password') quote the identifier and the literal safely.
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    --set=name="$name" --set=password="$password" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
  echo "init-databases: role and database \"$name\" created"
}

create_service_database crm "${CRM_DB_PASSWORD:?CRM_DB_PASSWORD is not set}"
create_service_database cem "${CEM_DB_PASSWORD:?CEM_DB_PASSWORD is not set}"
