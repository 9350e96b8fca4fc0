#!/usr/bin/env bash
# The cluster's MLflow tracking server, with MLflow's basic-auth app and a generated password.
#
#   scripts/mlflow_server.sh STATE_DIR HOST PORT BACKEND_STORE_URI ARTIFACTS_DESTINATION
#
# STATE_DIR (on the cluster: /mnt/efs/emo_ray/mlflow/auth, shared by every node) holds, created
# once and owner-only (umask 077):
#   password     the admin password: 32 random bytes, hex (every node exports it as
#                MLFLOW_TRACKING_PASSWORD from ~/.emo_ray_env; a laptop reads it with `ray exec`)
#   secret_key   Flask's session/CSRF key for the auth app
#   basic_auth.ini, basic_auth.db   MLflow's auth config and user store
# A second start reuses them, so the password never changes under running jobs. The server runs
# in the foreground (cluster.yaml wraps it in setsid/nohup/flock; tests own its process group).
set -euo pipefail
state=$1 host=$2 port=$3 store=$4 artifacts=$5
umask 077
mkdir -p "$state"
chmod 700 "$state"
new_secret() { python -c 'import secrets; print(secrets.token_hex(32))'; }
[ -s "$state/password" ] || new_secret > "$state/password"
[ -s "$state/secret_key" ] || new_secret > "$state/secret_key"
cat > "$state/basic_auth.ini" <<INI
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = sqlite:///$state/basic_auth.db
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$state/basic_auth.ini"
export MLFLOW_AUTH_ADMIN_PASSWORD="$(cat "$state/password")"
export MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$state/secret_key")"
export MLFLOW_DISABLE_TELEMETRY=true
# MLflow 3.17 starts 7 background job consumers (GenAI trace roll-ups, judges) by default, each a
# Python process importing MLflow: measured on 2 cores, health after 47 s instead of 28 s and 12-17 s
# per authenticated request instead of 0.8-1.6 s while they start. emo_ray uses none of those jobs.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
exec mlflow server --app-name basic-auth --host "$host" --port "$port" --workers 1 \
  --backend-store-uri "$store" --artifacts-destination "$artifacts"
