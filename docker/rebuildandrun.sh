#!/usr/bin/env bash
# Build the spoolsoap image and (re)start the façade and the supervisor with
# Docker Compose, configured by the project's `env` file, as on the platform.
#
#   docker/rebuildandrun.sh [PORT] [--devauth]
#
#   PORT       host port of the façade (default: FACADE_PORT from the env file)
#   --devauth  also run the development auth manager (local trials; its port,
#              DEVAUTH_PORT, is published on 127.0.0.1 only); unless AUTH_MANAGERS
#              is set, it is the one authentication manager the façade asks
#
# Environment: ENV_FILE (another env file), PUBLISH_ADDRESS (host address to
# publish the façade on; default all), BASE (base image), WHEELS_ONLY=true
# (install from docker/wheels/ only), SPOOLSOAP_IMAGE (image name),
# COMPOSE_PROJECT_NAME (default spoolsoap). Needs `docker compose` (or the
# standalone `docker-compose`).
#
# Containers whose image or configuration changed are recreated. A recreated
# supervisor container ends its running jobs (recorded FAILED); to restart only
# the daemon and keep them, use: docker compose ... kill -s HUP supervisor
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PORT=""
PROFILE=()
for arg in "$@"; do
    case "$arg" in
        --devauth) PROFILE=(--profile devauth) ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *[!0-9]*|"") echo "rebuildandrun: unknown argument '$arg' (usage: $0 [PORT] [--devauth])" >&2; exit 2 ;;
        *) PORT="$arg" ;;
    esac
done

ENV_FILE="$(cd "$(dirname "${ENV_FILE:-$ROOT/env}")" && pwd)/$(basename "${ENV_FILE:-env}")"
[ -f "$ENV_FILE" ] || { echo "rebuildandrun: no env file at $ENV_FILE" >&2; exit 2; }
export ENV_FILE

setting() {  # KEY DEFAULT: the environment's value, else the env file's, else DEFAULT
    local value="${!1:-}"
    [ -n "$value" ] || value="$(sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$ENV_FILE" | tail -1)"
    printf '%s' "${value:-$2}"
}
CONTEXT_ROOT="$(setting CONTEXT_ROOT /demo-waiter)"
FACADE_PORT="$(setting FACADE_PORT 8080)"
DEVAUTH_PORT="$(setting DEVAUTH_PORT 8081)"
PORT="${PORT:-$FACADE_PORT}"
AUTH_MANAGERS="$(setting AUTH_MANAGERS "")"
if [ -z "$AUTH_MANAGERS" ] && [ "${#PROFILE[@]}" -gt 0 ]; then
    # devauth shares the façade's network: both names of its URL, with or without ?wsdl
    AUTH_MANAGERS="http://localhost:$DEVAUTH_PORT/authManager/AuthManager http://127.0.0.1:$DEVAUTH_PORT/authManager/AuthManager"
fi
export AUTH_MANAGERS
export FACADE_PUBLISH="${PUBLISH_ADDRESS:+$PUBLISH_ADDRESS:}$PORT"

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    echo "rebuildandrun: needs Docker Compose ('docker compose' or 'docker-compose')" >&2
    exit 2
fi
compose+=(-f "$HERE/compose.yaml" --env-file "$ENV_FILE" "${PROFILE[@]}")
hint="$(printf '%q ' "${compose[@]}")"  # the closing hints name the command that exists here

echo "rebuildandrun: building the image and starting the services (env: $ENV_FILE)"
"${compose[@]}" build
"${compose[@]}" up -d --remove-orphans

# Ready when every service's WSDL answers (gunicorn prints it once it listens).
services="$(sed -n 's/^service[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$ROOT"/jobs/definitions/*.toml)"
host="${PUBLISH_ADDRESS:-localhost}"
[ "$host" = 0.0.0.0 ] && host=localhost
ready=false
for _ in $(seq 120); do
    if "${compose[@]}" logs --no-log-prefix facade 2>/dev/null | grep -q '^facade: WSDL at'; then
        ready=true
        break
    fi
    if [ -z "$("${compose[@]}" ps -q --status running facade 2>/dev/null)" ]; then
        break
    fi
    sleep 0.5
done
if ! $ready; then
    "${compose[@]}" logs --tail 30 >&2 || true
    echo "rebuildandrun: the façade did not start; see the logs above" >&2
    exit 1
fi

echo
echo "  spoolsoap is running (${hint}ps)."
echo "  Point the workflow manager or a client at:"
for s in $services; do
    echo "    http://$host:$PORT$CONTEXT_ROOT/$s?wsdl"
done
if [ "${#PROFILE[@]}" -gt 0 ]; then
    echo "  Development auth manager (extraParameters: auth=<this>,):"
    echo "    http://localhost:$DEVAUTH_PORT/authManager/AuthManager?wsdl"
    creds=""
    for _ in $(seq 30); do  # devauth writes them as it starts
        creds="$("${compose[@]}" exec -T devauth cat /var/lib/spoolsoap/devauth/demo-credentials.txt 2>/dev/null \
                 | grep -E '^(username|password|project)=' || true)"
        [ -n "$creds" ] && break
        sleep 0.5
    done
    if [ -n "$creds" ]; then
        echo "  Demo user:"
        while IFS= read -r line; do echo "    $line"; done <<<"$creds"
    fi
fi
echo "  Logs: ${hint}logs -f"
echo "  Jobs: ${hint}exec -u spoolsoap supervisor jobctl list"
echo "  Restart the daemon, keep the jobs: ${hint}kill -s HUP supervisor"
