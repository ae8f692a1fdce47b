#!/usr/bin/env bash
# One-shot setup that docker-compose's airflow-init service runs (as root, like Airflow's
# official compose file, so it can hand the volumes to AIRFLOW_UID):
#   1. check the MDE and lake connections (fast, before anything is changed);
#   2. make the writable volumes belong to AIRFLOW_UID:0;
#   3. migrate the metadata database;
#   4. create the admin user, or set its password from .env when it exists (a changed
#      _AIRFLOW_WWW_USER_PASSWORD takes effect at the next `docker compose up`);
#   5. import the pools (mde_api) from include/pools.json and, when .env sets
#      AIRFLOW_VAR_MDE_TENANTS, create pool mde_api_<name> per tenant (same slots), then
#      show the result.
# DAGs are not unpaused here: they reach the metadata DB only once the dag-processor has
# parsed them, after this script (docs/DEPLOYMENT.md says how to unpause them).
# Any failing step stops the script with a non-zero status, so no other service starts.
#
# Every Airflow/Python command goes through the image's /entrypoint, which puts the
# airflow user's packages on root's path and waits for the database when needed.
set -euo pipefail

readonly ENTRYPOINT="${AIRFLOW_ENTRYPOINT:-/entrypoint}"
DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly DEPLOY_DIR
readonly POOLS_FILE="${MDE_POOLS_FILE:-${DEPLOY_DIR}/../pools.json}"
readonly HOME_DIR="${AIRFLOW_HOME:-/opt/airflow}"
# Volumes the Airflow containers write to (see docker-compose.yaml).
readonly WRITABLE_DIRS=(
  "${HOME_DIR}/logs"
  "${HOME_DIR}/lake"
  "${HOME_DIR}/mde-rate-ledger"
  "${HOME_DIR}/mde-sim"
)

step() { echo; echo "==> $*"; }

if [[ -z "${AIRFLOW_UID:-}" ]]; then
  echo "WARNING: AIRFLOW_UID is not set in .env; using 50000. On Linux set it to \`id -u\`"
  echo "         so files the containers write into mounted folders stay yours."
fi
owner="${AIRFLOW_UID:-50000}:0"

step "Checking connections (mde_default, the lake)"
CONNECTION_CHECK_MAX_COUNT=0 "${ENTRYPOINT}" python "${DEPLOY_DIR}/check_connections.py"

step "Giving the writable volumes to ${owner}"
for dir in "${WRITABLE_DIRS[@]}"; do
  mkdir -p "${dir}"
  chown -R "${owner}" "${dir}"
  chmod -R g+rwX "${dir}"
done

step "Airflow version (waits for the metadata database)"
"${ENTRYPOINT}" airflow version

step "Migrating the metadata database"
"${ENTRYPOINT}" airflow db migrate

step "Admin user '${_AIRFLOW_WWW_USER_USERNAME:-admin}': created, or its password set from .env"
if [[ -z "${_AIRFLOW_WWW_USER_PASSWORD:-}" ]]; then
  echo "ERROR: _AIRFLOW_WWW_USER_PASSWORD is empty: set it in .env (see .env.example)." >&2
  exit 1
fi
# `users create` leaves an existing user as it is (and says so); `users reset-password`
# (FAB auth manager) then makes the password the one in .env, new or changed. Values go
# as --option=value: a password starting with '-' (make_env's token_urlsafe gives one in
# 64) would otherwise be read as an option and the init would stop.
"${ENTRYPOINT}" airflow users create \
  --username="${_AIRFLOW_WWW_USER_USERNAME:-admin}" \
  --firstname="${_AIRFLOW_WWW_USER_FIRSTNAME:-Airflow}" \
  --lastname="${_AIRFLOW_WWW_USER_LASTNAME:-Admin}" \
  --email="${_AIRFLOW_WWW_USER_EMAIL:-airflowadmin@example.com}" \
  --role=Admin \
  --password="${_AIRFLOW_WWW_USER_PASSWORD}"
"${ENTRYPOINT}" airflow users reset-password \
  --username="${_AIRFLOW_WWW_USER_USERNAME:-admin}" \
  --password="${_AIRFLOW_WWW_USER_PASSWORD}"

step "Importing pools from ${POOLS_FILE}"
"${ENTRYPOINT}" airflow pools import "${POOLS_FILE}"
if [[ -n "${AIRFLOW_VAR_MDE_TENANTS:-}" ]]; then
  # One pool per tenant DAG (mde_alert_ips_<name>); a Variable that does not parse stops here.
  step "Creating a pool per tenant of Variable mde_tenants"
  "${ENTRYPOINT}" python "${DEPLOY_DIR}/tenant_pools.py" --pools "${POOLS_FILE}"
fi
"${ENTRYPOINT}" airflow pools get mde_api --output json

step "airflow-init done"
