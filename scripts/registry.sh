#!/usr/bin/env bash
# registry.sh start|stop|status|env
#
# Runs two instances of Debian's docker-registry (github.com/docker/distribution) on
# loopback for berth's image tests and benchmark:
#   - anonymous:          127.0.0.1:$BERTH_REGISTRY_PORT       (default 5555)
#   - htpasswd basic auth: 127.0.0.1:$BERTH_AUTH_REGISTRY_PORT (default 5556),
#     user $BERTH_TEST_AUTH_USER / $BERTH_TEST_AUTH_PASSWORD (default berth / berth-secret)
# Their state lives in $BERTH_REGISTRY_DIR (default /tmp/berth-registry): config, data,
# logs, pid files. `start` prints the environment the tests read (eval it);
# `env` prints it again for running instances; `stop` stops both and removes the state.
# Run as root with BERTH_REGISTRY_USER set, the registries run as that user and their
# state is its own: tests that run as that user may change the stored blobs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

dir=${BERTH_REGISTRY_DIR:-/tmp/berth-registry}
# What runs the registries: this user, or BERTH_REGISTRY_USER (see above).
as_owner=()
port=${BERTH_REGISTRY_PORT:-5555}
auth_port=${BERTH_AUTH_REGISTRY_PORT:-5556}
user=${BERTH_TEST_AUTH_USER:-berth}
password=${BERTH_TEST_AUTH_PASSWORD:-berth-secret}

print_env() {
  echo "export BERTH_TEST_REGISTRY=127.0.0.1:$port"
  echo "export BERTH_TEST_REGISTRY_DATA=$dir/anon/data"
  echo "export BERTH_TEST_AUTH_REGISTRY=127.0.0.1:$auth_port"
  echo "export BERTH_TEST_AUTH_USER=$user"
  echo "export BERTH_TEST_AUTH_PASSWORD=$password"
}

write_config() { # NAME PORT [HTPASSWD]
  local name=$1 p=$2 htpasswd=${3:-}
  mkdir -p "$dir/$name/data"
  {
    echo "version: 0.1"
    echo "log:"
    echo "  level: warn"
    echo "  accesslog:"
    echo "    disabled: true"
    echo "storage:"
    echo "  filesystem:"
    echo "    rootdirectory: $dir/$name/data"
    echo "  delete:"
    echo "    enabled: true"
    echo "  maintenance:"
    echo "    uploadpurging:"
    echo "      enabled: false"
    echo "http:"
    echo "  addr: 127.0.0.1:$p"
    echo "  secret: berth-test-secret-$name"
    if [ -n "$htpasswd" ]; then
      echo "auth:"
      echo "  htpasswd:"
      echo "    realm: berth-test"
      echo "    path: $htpasswd"
    fi
  } >"$dir/$name/config.yml"
}

start_one() { # NAME PORT
  local name=$1 p=$2
  if [ -f "$dir/$name/pid" ] && kill -0 "$(cat "$dir/$name/pid")" 2>/dev/null; then
    return 0
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "registry.sh: port $p is already in use; set BERTH_REGISTRY_PORT / BERTH_AUTH_REGISTRY_PORT" >&2
    exit 1
  fi
  setsid "${as_owner[@]}" /usr/bin/docker-registry serve "$dir/$name/config.yml" >"$dir/$name/log" 2>&1 </dev/null &
  echo $! >"$dir/$name/pid"
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$p/v2/"; then
      return 0
    fi
    if ! kill -0 "$(cat "$dir/$name/pid")" 2>/dev/null; then
      echo "registry.sh: $name registry exited; its log:" >&2
      cat "$dir/$name/log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "registry.sh: $name registry did not answer on 127.0.0.1:$p within 10 s; log in $dir/$name/log" >&2
  exit 1
}

stop_one() { # NAME
  local name=$1 pid
  [ -f "$dir/$name/pid" ] || return 0
  pid=$(cat "$dir/$name/pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/$name/pid"
}

case "${1:-}" in
  start)
    [ -x /usr/bin/docker-registry ] || berth_need_packages docker-registry
    command -v htpasswd >/dev/null || berth_need_packages apache2-utils
    mkdir -p "$dir"
    write_config anon "$port"
    htpasswd -Bbn "$user" "$password" >"$dir/htpasswd"
    write_config auth "$auth_port" "$dir/htpasswd"
    if [ -n "${BERTH_REGISTRY_USER:-}" ]; then
      [ "$(id -u)" -eq 0 ] || { echo "registry.sh: BERTH_REGISTRY_USER needs root" >&2; exit 1; }
      chown -R "$BERTH_REGISTRY_USER:" "$dir"
      as_owner=(setpriv --reuid="$BERTH_REGISTRY_USER" --regid="$(id -g "$BERTH_REGISTRY_USER")"
        --init-groups --inh-caps=-all --)
    fi
    start_one anon "$port"
    start_one auth "$auth_port"
    berth_log "registries up: anonymous 127.0.0.1:$port, basic auth 127.0.0.1:$auth_port (state in $dir)"
    print_env
    ;;
  env)
    print_env
    ;;
  status)
    for n in anon auth; do
      if [ -f "$dir/$n/pid" ] && kill -0 "$(cat "$dir/$n/pid")" 2>/dev/null; then
        echo "$n: running (pid $(cat "$dir/$n/pid"))"
      else
        echo "$n: stopped"
      fi
    done
    ;;
  stop)
    stop_one anon
    stop_one auth
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
