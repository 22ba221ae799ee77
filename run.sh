#!/usr/bin/env bash
# One entry point for newcomers and CI:
#   ./run.sh test    create .venv, install everything, run ruff, mypy, the JS unit tests and the whole test suite
#   ./run.sh demo    run the demo project (see README)
#   ./run.sh bench   the benchmark suite (under 10 minutes; --quick for seconds); writes docs/benchmarks.md
#   ./run.sh lint    ruff and mypy only
#   ./run.sh setup   what `test` installs first (system packages, .venv), and nothing else
#   ./run.sh messages  re-extract the translatable strings into realtime_async/locale/*/django.po and compile the .mo
# PYTHON picks the interpreter (default python3), VENV the environment (default .venv).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

stamp_of() {  # what an install of these extras from this pyproject.toml is stamped with
    (cat pyproject.toml "${EXTRA_REQUIREMENTS:-/dev/null}"; echo "$1") | sha256sum | cut -c1-16
}

is_installed() {
    [ -x "$VENV/bin/python" ] && [ -f "$VENV/.installed-$1" ] && [ "$(cat "$VENV/.installed-$1")" = "$(stamp_of "$1")" ]
}

ensure_venv() {
    local extras=${1:-dev}
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> creating $VENV with $($PYTHON --version)"
        "$PYTHON" -m venv "$VENV"
    fi
    if ! is_installed "$extras"; then
        echo "==> installing realtime_async[$extras] into $VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e ".[$extras]" ${EXTRA_REQUIREMENTS:+-r "$EXTRA_REQUIREMENTS"}
        stamp_of "$extras" > "$VENV/.installed-$extras"
    fi
}

ensure_system_packages() {
    # The browser tests drive Debian's chromium; the fault tests start private redis-servers;
    # the JS unit tests run on node's own test runner.
    local missing=()
    command -v chromium >/dev/null || missing+=(chromium)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v node >/dev/null || missing+=(nodejs)
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
        if [ $# -eq 0 ]; then
            echo "==> JS unit tests (node --test)"
            node --test tests/js/
        fi
        # pytest runs tests/unit first, then tests/integration, then tests/system (tests/conftest.py).
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    lint)
        ensure_venv
        lint
        ;;
    setup)
        ensure_system_packages
        ensure_venv
        ;;
    bench)
        shift
        ensure_system_packages
        ensure_venv
        exec "$VENV/bin/python" -m bench "$@"
        ;;
    messages)
        # The package's own strings only (tests, demo and bench live outside realtime_async/); the JS has
        # no catalogue of its own: it gets its strings from the server (display.i18n()). Needs GNU gettext.
        ensure_venv
        command -v msgfmt >/dev/null || { echo "Please install gettext (Debian/Ubuntu: sudo apt-get install gettext)" >&2; exit 1; }
        admin="$(cd "$VENV" && pwd)/bin/django-admin"
        cd realtime_async
        "$admin" makemessages --locale de --locale fr --add-location file --ignore 'static/*'
        "$admin" compilemessages
        echo "==> now translate the new (empty or fuzzy) entries and run ./run.sh messages again to compile them"
        ;;
    demo)
        shift
        # A venv made for the tests has everything the demo needs too.
        is_installed dev || ensure_venv demo
        exec "$VENV/bin/python" demo/run.py "$@"
        ;;
    *)
        sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
