#!/usr/bin/env bash
# One entry point for newcomers and CI:
#   ./run.sh test    create .venv, install everything, run ruff, mypy and the whole test suite
#   ./run.sh demo    run the demo project (see README)
#   ./run.sh lint    ruff and mypy only
# PYTHON picks the interpreter (default python3), VENV the environment (default .venv).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> creating $VENV with $($PYTHON --version)"
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.installed" want
    want=$(cat pyproject.toml "${EXTRA_REQUIREMENTS:-/dev/null}" | sha256sum | cut -c1-16)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "==> installing realtime_async and its dev dependencies into $VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e ".[dev]" ${EXTRA_REQUIREMENTS:+-r "$EXTRA_REQUIREMENTS"}
        echo "$want" > "$stamp"
    fi
}

ensure_system_packages() {
    # The browser tests drive Debian's chromium; the fault tests start private redis-servers.
    local missing=()
    command -v chromium >/dev/null || missing+=(chromium)
    command -v redis-server >/dev/null || missing+=(redis-server)
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "==> installing ${missing[*]} with apt-get"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        else
            echo "Please install: ${missing[*]} (Debian/Ubuntu: sudo apt-get install ${missing[*]})" >&2
            exit 1
        fi
    fi
}

ensure_redis() {
    # Tests use the Redis at REDIS_URL (default 127.0.0.1:6379) under a per-run key prefix.
    if ! "$VENV/bin/python" -c "import redis, os; redis.Redis.from_url(os.environ.get('REDIS_URL', 'redis://127.0.0.1:6379/11'), socket_connect_timeout=2).ping()" 2>/dev/null; then
        echo "==> no Redis answering; starting redis-server on 127.0.0.1:6379"
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
        for _ in $(seq 50); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
    fi
}

lint() {
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    "$VENV/bin/mypy"
}

case "${1:-}" in
    test)
        shift
        ensure_system_packages
        ensure_venv
        ensure_redis
        lint
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    lint)
        ensure_venv
        lint
        ;;
    demo)
        shift
        ensure_venv
        exec "$VENV/bin/python" demo/run.py "$@"
        ;;
    *)
        sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
