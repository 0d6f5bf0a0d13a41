#!/bin/sh
# Configures an OpenBao/Vault server (typically `bao server -dev`) for the
# Prism plugins (DESIGN.md §5). Idempotent: run it again to converge.
# POSIX sh and the `bao` CLI only (the Vault HTTP API): it runs as written in the
# OpenBao image (compose's vault-init) and on a developer machine. No psql: the
# PostgreSQL setup runs through Vault's own database plugin.
#
#   database engine  database/
#     connection prism-postgres  (postgresql-database-plugin)  role prism-postgres
#     connection prism-redis     (redis-database-plugin)       role prism-redis
#   KV v2            secret/prism/kafka  (username, password, mechanism)
#   policy           prism   (read those credentials, renew/revoke their leases)
#   AppRole          auth/approle/role/prism  (token_policies=prism)
#
# Vault:      VAULT_ADDR, VAULT_TOKEN (a token allowed to configure all this)
# CLI:        $BAO, else <repo>/.venv/bin/bao, else `bao` / `vault` on PATH
# Every setting below is an environment variable or the matching flag
# (`--pg-port 5433` sets PG_PORT); defaults in brackets.
#   PostgreSQL  PG_HOST [127.0.0.1] PG_PORT [5432] PG_DATABASE [prism]
#               PG_ADMIN_USER [postgres] PG_ADMIN_PASSWORD [] (the user Vault
#               creates roles with; each user's creation also ensures the
#               NOLOGIN group role PG_OWNER_ROLE [prism_owner] that owns the tables)
#               PG_TTL [1h] PG_MAX_TTL [24h]      SKIP_POSTGRES=1 to skip
#   Redis       REDIS_HOST [127.0.0.1] REDIS_PORT [6379]
#               REDIS_ADMIN_USER [default] REDIS_ADMIN_PASSWORD []
#               REDIS_KEY_PATTERN [prism:*] REDIS_TTL [1h] REDIS_MAX_TTL [24h]
#               SKIP_REDIS=1 to skip
#   Kafka       KAFKA_SASL_USERNAME [prism] KAFKA_SASL_PASSWORD [kept, or random
#               on first run] KAFKA_SASL_MECHANISM [SCRAM-SHA-512]  SKIP_KAFKA=1
#   AppRole     APPROLE_TOKEN_TTL [1h] APPROLE_TOKEN_MAX_TTL [4h]
#               SECRET_ID_FILE: if set, a fresh secret_id is written there
#               (mode 600) instead of being printed.
#   Token       PLUGIN_TOKEN_ID: if set, a periodic token with exactly this id
#               and policy prism (for dev stacks such as compose.yaml, where the
#               plugins are given its id) [unset] PLUGIN_TOKEN_PERIOD [24h]
#
# Secrets (passwords, secret ids) are never printed.
set -eu

die() { echo "vault-dev-setup: $*" >&2; exit 1; }

# --flag value  →  FLAG=value
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) sed -n '2,30p' "$0"; exit 0 ;;
    --*=*) name="${1%%=*}"; value="${1#*=}"; shift ;;
    --*) [ $# -ge 2 ] || die "$1 needs a value"; name="$1"; value="$2"; shift 2 ;;
    *) die "unexpected argument $1 (see --help)" ;;
  esac
  name="$(printf '%s' "${name#--}" | tr 'a-z-' 'A-Z_')"
  case "$name" in
    PG_*|REDIS_*|KAFKA_*|APPROLE_*|PLUGIN_TOKEN_*|SECRET_ID_FILE|SKIP_*|BAO|VAULT_ADDR) export "$name=$value" ;;
    *) die "unknown flag --${name}" ;;
  esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${BAO:-}" ]; then
  if [ -x "$root/.venv/bin/bao" ]; then BAO="$root/.venv/bin/bao"
  elif command -v bao >/dev/null; then BAO=bao
  elif command -v vault >/dev/null; then BAO=vault
  else die "no bao/vault CLI: set \$BAO or run scripts/install-deps.sh"; fi
fi
[ -n "${VAULT_ADDR:-}" ] || die "VAULT_ADDR is not set"
[ -n "${VAULT_TOKEN:-}" ] || die "VAULT_TOKEN is not set"
BAO_ADDR="$VAULT_ADDR"; BAO_TOKEN="$VAULT_TOKEN"
export VAULT_ADDR VAULT_TOKEN BAO_ADDR BAO_TOKEN

PG_HOST="${PG_HOST:-127.0.0.1}"; PG_PORT="${PG_PORT:-5432}"; PG_DATABASE="${PG_DATABASE:-prism}"
PG_ADMIN_USER="${PG_ADMIN_USER:-postgres}"; PG_ADMIN_PASSWORD="${PG_ADMIN_PASSWORD:-}"
PG_OWNER_ROLE="${PG_OWNER_ROLE:-prism_owner}"; PG_TTL="${PG_TTL:-1h}"; PG_MAX_TTL="${PG_MAX_TTL:-24h}"
REDIS_HOST="${REDIS_HOST:-127.0.0.1}"; REDIS_PORT="${REDIS_PORT:-6379}"
REDIS_ADMIN_USER="${REDIS_ADMIN_USER:-default}"; REDIS_ADMIN_PASSWORD="${REDIS_ADMIN_PASSWORD:-}"
REDIS_KEY_PATTERN="${REDIS_KEY_PATTERN:-prism:*}"; REDIS_TTL="${REDIS_TTL:-1h}"; REDIS_MAX_TTL="${REDIS_MAX_TTL:-24h}"
KAFKA_SASL_USERNAME="${KAFKA_SASL_USERNAME:-prism}"; KAFKA_SASL_MECHANISM="${KAFKA_SASL_MECHANISM:-SCRAM-SHA-512}"
APPROLE_TOKEN_TTL="${APPROLE_TOKEN_TTL:-1h}"; APPROLE_TOKEN_MAX_TTL="${APPROLE_TOKEN_MAX_TTL:-4h}"

bao() { "$BAO" "$@"; }
quiet() { "$BAO" "$@" >/dev/null; }

case "$PG_OWNER_ROLE" in
  *[!a-z0-9_]*|'') die "PG_OWNER_ROLE must be a lowercase identifier" ;;
esac

# --- engines ---------------------------------------------------------------
mounts="$(bao secrets list -format=json)"
if ! printf '%s' "$mounts" | grep -q '"database/"'; then
  quiet secrets enable database
  echo "enabled the database secrets engine at database/"
fi
if ! printf '%s' "$mounts" | grep -q '"secret/"'; then
  quiet secrets enable -path=secret -version=2 kv
  echo "enabled KV v2 at secret/"
fi

# --- PostgreSQL ------------------------------------------------------------
if [ "${SKIP_POSTGRES:-}" != 1 ]; then
  # Short-lived users must not own objects (revoking them would fail), so a
  # NOLOGIN group role owns the plugin's schema and table, and every minted
  # user acts as it (ALTER ROLE ... SET role). The group role and its grants are
  # ensured by the creation statements themselves (idempotent; the DO block is
  # run whole, as it quotes with $$), so this needs nothing but Vault.
  quiet write database/config/prism-postgres \
    plugin_name=postgresql-database-plugin \
    allowed_roles=prism-postgres \
    "connection_url=postgresql://{{username}}:{{password}}@$PG_HOST:$PG_PORT/$PG_DATABASE?sslmode=disable" \
    "username=$PG_ADMIN_USER" "password=$PG_ADMIN_PASSWORD" \
    verify_connection=true
  # Revoking ends the user's sessions too: a revoked lease really locks it out.
  cat <<JSON | quiet write database/roles/prism-postgres -
{
  "db_name": "prism-postgres",
  "creation_statements": [
    "DO \$\$ BEGIN CREATE ROLE \"$PG_OWNER_ROLE\" NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END \$\$;",
    "GRANT CONNECT, CREATE, TEMPORARY ON DATABASE \"$PG_DATABASE\" TO \"$PG_OWNER_ROLE\";",
    "GRANT USAGE, CREATE ON SCHEMA public TO \"$PG_OWNER_ROLE\";",
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE \"$PG_OWNER_ROLE\";",
    "ALTER ROLE \"{{name}}\" SET role = '$PG_OWNER_ROLE';"
  ],
  "revocation_statements": [
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}' AND pid <> pg_backend_pid();",
    "DROP ROLE IF EXISTS \"{{name}}\";"
  ],
  "default_ttl": "$PG_TTL",
  "max_ttl": "$PG_MAX_TTL"
}
JSON
  echo "database/roles/prism-postgres → $PG_HOST:$PG_PORT/$PG_DATABASE (ttl $PG_TTL, max $PG_MAX_TTL)"
fi

# --- Redis -----------------------------------------------------------------
if [ "${SKIP_REDIS:-}" != 1 ]; then
  quiet write database/config/prism-redis \
    plugin_name=redis-database-plugin \
    allowed_roles=prism-redis \
    "host=$REDIS_HOST" "port=$REDIS_PORT" \
    "username=$REDIS_ADMIN_USER" "password=$REDIS_ADMIN_PASSWORD" \
    tls=false verify_connection=true
  quiet write database/roles/prism-redis \
    db_name=prism-redis \
    "creation_statements=[\"~$REDIS_KEY_PATTERN\", \"+@all\"]" \
    "default_ttl=$REDIS_TTL" "max_ttl=$REDIS_MAX_TTL"
  echo "database/roles/prism-redis → $REDIS_HOST:$REDIS_PORT (keys ~$REDIS_KEY_PATTERN, ttl $REDIS_TTL, max $REDIS_MAX_TTL)"
fi

# --- Kafka SASL secret -----------------------------------------------------
if [ "${SKIP_KAFKA:-}" != 1 ]; then
  current_user="$(bao kv get -field=username secret/prism/kafka 2>/dev/null || true)"
  current_mech="$(bao kv get -field=mechanism secret/prism/kafka 2>/dev/null || true)"
  if [ -n "${KAFKA_SASL_PASSWORD:-}" ]; then
    current_pass="$(bao kv get -field=password secret/prism/kafka 2>/dev/null || true)"
    if [ "$current_user" != "$KAFKA_SASL_USERNAME" ] || [ "$current_mech" != "$KAFKA_SASL_MECHANISM" ] \
       || [ "$current_pass" != "$KAFKA_SASL_PASSWORD" ]; then
      quiet kv put secret/prism/kafka "username=$KAFKA_SASL_USERNAME" \
        "password=$KAFKA_SASL_PASSWORD" "mechanism=$KAFKA_SASL_MECHANISM"
      echo "secret/prism/kafka written (new version)"
    fi
  elif [ -z "$current_user" ]; then
    pass="$(head -c 24 /dev/urandom | base64 | tr -d '/+=\n')"
    quiet kv put secret/prism/kafka "username=$KAFKA_SASL_USERNAME" \
      "password=$pass" "mechanism=$KAFKA_SASL_MECHANISM"
    echo "secret/prism/kafka written with a random password (read it: $BAO kv get secret/prism/kafka)"
  fi
  echo "secret/prism/kafka: username/password/mechanism for Kafka SASL"
fi

# --- policy and AppRole ------------------------------------------------------
policy="$(mktemp)"
trap 'rm -f "$policy"' EXIT
cat >"$policy" <<'HCL'
# Prism plugins: read their credentials, renew and revoke their own leases.
path "database/creds/prism-postgres" { capabilities = ["read"] }
path "database/creds/prism-redis"    { capabilities = ["read"] }
path "secret/data/prism/kafka"       { capabilities = ["read"] }
path "secret/metadata/prism/kafka"   { capabilities = ["read"] }
path "sys/leases/renew"              { capabilities = ["update"] }
path "sys/leases/revoke"             { capabilities = ["update"] }
HCL
quiet policy write prism "$policy"
auths="$(bao auth list -format=json)"
if ! printf '%s' "$auths" | grep -q '"approle/"'; then
  quiet auth enable approle
  echo "enabled AppRole auth at auth/approle/"
fi
quiet write auth/approle/role/prism token_policies=prism \
  "token_ttl=$APPROLE_TOKEN_TTL" "token_max_ttl=$APPROLE_TOKEN_MAX_TTL"
role_id="$(bao read -field=role_id auth/approle/role/prism/role-id)"
echo "policy prism and AppRole prism ready"
echo "role_id: $role_id"
if [ -n "${SECRET_ID_FILE:-}" ]; then
  (umask 077; bao write -f -field=secret_id auth/approle/role/prism/secret-id >"$SECRET_ID_FILE")
  echo "secret_id written to $SECRET_ID_FILE"
else
  echo "get a secret_id: $BAO write -f -field=secret_id auth/approle/role/prism/secret-id > secret-id"
fi

if [ -n "${PLUGIN_TOKEN_ID:-}" ]; then
  if ! bao token lookup "$PLUGIN_TOKEN_ID" >/dev/null 2>&1; then
    quiet token create -id="$PLUGIN_TOKEN_ID" -policy=prism -orphan \
      -period="${PLUGIN_TOKEN_PERIOD:-24h}" -display-name=prism-plugins
    echo "periodic token for the plugins created (policy prism, id from PLUGIN_TOKEN_ID)"
  fi
fi
