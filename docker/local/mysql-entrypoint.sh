#!/bin/bash
# The official image's contract on MariaDB: initialise the data directory on
# first start, then run the server with the given flags in the foreground.
set -euo pipefail
DATADIR=/var/lib/mysql
SERVER=(mariadbd --user=mysql --datadir="$DATADIR" --bind-address=0.0.0.0 --port=3306)

if [[ ! -d "$DATADIR/mysql" ]]; then
  echo "initialising the data directory" >&2
  mariadb-install-db --user=mysql --datadir="$DATADIR" --auth-root-authentication-method=normal \
    --skip-test-db >/dev/null
  "${SERVER[@]}" --skip-networking --socket=/run/mysqld/init.sock "$@" &
  pid=$!
  for _ in $(seq 1 120); do
    mariadb-admin --socket=/run/mysqld/init.sock -uroot ping >/dev/null 2>&1 && break
    sleep 0.5
  done
  sql() { mariadb --socket=/run/mysqld/init.sock -uroot "$@"; }
  {
    echo "CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY '${MYSQL_ROOT_PASSWORD:-}';"
    echo "GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;"
    echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '${MYSQL_ROOT_PASSWORD:-}';"
    if [[ -n "${MYSQL_DATABASE:-}" ]]; then
      echo "CREATE DATABASE IF NOT EXISTS \`$MYSQL_DATABASE\`;"
    fi
    if [[ -n "${MYSQL_USER:-}" ]]; then
      echo "CREATE USER IF NOT EXISTS '$MYSQL_USER'@'%' IDENTIFIED BY '${MYSQL_PASSWORD:-}';"
      [[ -n "${MYSQL_DATABASE:-}" ]] && echo "GRANT ALL PRIVILEGES ON \`$MYSQL_DATABASE\`.* TO '$MYSQL_USER'@'%';"
    fi
    echo "FLUSH PRIVILEGES;"
  } | sql
  for f in /docker-entrypoint-initdb.d/*.sql; do
    [[ -f "$f" ]] || continue
    echo "running $f" >&2
    sql -p"${MYSQL_ROOT_PASSWORD:-}" ${MYSQL_DATABASE:+"$MYSQL_DATABASE"} <"$f"
  done
  mariadb-admin --socket=/run/mysqld/init.sock -uroot -p"${MYSQL_ROOT_PASSWORD:-}" shutdown
  wait "$pid" || true
fi
exec "${SERVER[@]}" "$@"
