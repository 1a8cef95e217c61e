#!/usr/bin/env bash
# N dseek replicas behind nginx, sharing one context cache in Redis, on one machine (the same
# commands, one replica per host, make a cluster: see deploy/README.md).
#
#   deploy/replicas.sh start --dir RUN_DIR [--replicas 2] [--port 8080] [--first-port 8081]
#                            [--replica-ports 8081,8082] [--redis URL | --redis-port 6379]
#                            [-- more `dseek serve` flags, e.g. --model M --threads 4]
#   deploy/replicas.sh stop --dir RUN_DIR
#
# start: starts redis-server with deploy/redis.conf (unless --redis names one already running),
# the replicas (`dseek serve --context-store redis://…`), waits until each one's /health is 200
# (it is once its model is loaded), then starts nginx from deploy/nginx.conf.template on --port.
# Logs and pid files go to RUN_DIR. stop: ends what start started, nginx first.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dseek="$here/../bin/dseek.js"

cmd="${1:-}"; shift || true
dir=""; replicas=2; port=8080; first_port=""; replica_ports=""; redis_url=""; redis_port=6379
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --replicas) replicas="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --first-port) first_port="$2"; shift 2 ;;
    --replica-ports) replica_ports="$2"; shift 2 ;;
    --redis) redis_url="$2"; shift 2 ;;
    --redis-port) redis_port="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "replicas.sh: unknown argument $1 (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done
[ -n "$dir" ] || { echo "replicas.sh: --dir RUN_DIR is required" >&2; exit 2; }

# GET a URL and print the status (node is there anyway; curl may not be).
status() { node -e "fetch(process.argv[1]).then(r => console.log(r.status), () => console.log(0))" "$1"; }

wait_healthy() { # url seconds
  local url="$1" until=$(( $(date +%s) + $2 ))
  while [ "$(status "$url")" != 200 ]; do
    [ "$(date +%s)" -lt "$until" ] || { echo "replicas.sh: $url did not become healthy" >&2; return 1; }
    sleep 0.2
  done
}

case "$cmd" in
  start)
    mkdir -p "$dir/logs" "$dir/tmp"
    dir="$(cd "$dir" && pwd)"
    if [ -z "$redis_url" ]; then
      command -v redis-server >/dev/null || { echo "replicas.sh: redis-server not found (apt-get install redis-server)" >&2; exit 1; }
      redis-server "$here/redis.conf" --port "$redis_port" --dir "$dir" --daemonize yes \
        --pidfile "$dir/redis.pid" --logfile "$dir/logs/redis.log"
      redis_url="redis://127.0.0.1:$redis_port"
    fi
    if [ -z "$replica_ports" ]; then
      base="${first_port:-$((port + 1))}"
      replica_ports="$(seq -s, "$base" $((base + replicas - 1)))"
    fi
    IFS=, read -r -a ports <<< "$replica_ports"
    upstreams=""
    i=0
    for p in "${ports[@]}"; do
      i=$((i + 1))
      nohup node "$dseek" serve --host 127.0.0.1 --port "$p" --context-store "$redis_url" "${extra[@]}" \
        > "$dir/logs/replica-$i.log" 2>&1 &
      echo $! > "$dir/replica-$i.pid"
      upstreams+="    server 127.0.0.1:$p max_fails=1 fail_timeout=5s;"$'\n'
    done
    for p in "${ports[@]}"; do wait_healthy "http://127.0.0.1:$p/health" 300; done
    sed -e "s|@RUN_DIR@|$dir|g" -e "s|@LISTEN@|127.0.0.1:$port|g" "$here/nginx.conf.template" \
      | awk -v ups="$upstreams" '{ if ($0 == "@UPSTREAMS@") printf "%s", ups; else print }' > "$dir/nginx.conf"
    nginx -p "$dir" -c "$dir/nginx.conf"
    wait_healthy "http://127.0.0.1:$port/health" 30
    echo "dseek: ${#ports[@]} replicas on ${replica_ports} behind nginx at http://127.0.0.1:$port, context store $redis_url (logs in $dir/logs)"
    ;;
  stop)
    [ -f "$dir/nginx.pid" ] && nginx -p "$dir" -c "$dir/nginx.conf" -s quit 2>/dev/null || true
    for f in "$dir"/replica-*.pid; do
      [ -f "$f" ] || continue
      kill "$(cat "$f")" 2>/dev/null || true # SIGTERM: in-flight requests finish first
      rm -f "$f"
    done
    if [ -f "$dir/redis.pid" ]; then kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; fi
    ;;
  *)
    echo "usage: $0 start|stop --dir RUN_DIR [options] (see the comment at the top of $0)" >&2
    exit 2
    ;;
esac
