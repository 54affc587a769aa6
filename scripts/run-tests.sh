#!/usr/bin/env bash
# Run the test suite; the databases on 127.0.0.1 (PostgreSQL 5432, MariaDB 3306)
# are started first when they are installed but not running.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v pg_ctlcluster >/dev/null && ! pg_isready -h 127.0.0.1 -q; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
fi
if command -v mariadbd >/dev/null && ! mariadb-admin -h 127.0.0.1 -uroot ping >/dev/null 2>&1; then
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
    sleep 3
fi

exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
