#!/usr/bin/env bash
# A static upstream for measuring pacer's own per-request cost: nginx on
# 127.0.0.1 answering every POST /v1/chat/completions with one fixed chat
# completion (and GET /v1/models with a model list), so the server costs
# next to nothing and what is left is pacer.
#
#   bench/run/static_upstream.sh start [PORT]   # prints: http://127.0.0.1:PORT
#   bench/run/static_upstream.sh stop
#
# Config, pid and logs live in a temp dir ($STATIC_DIR, default
# /tmp/pacer-static-upstream); access logging is off. Needs nginx
# (Debian: apt-get install nginx-light).
set -euo pipefail

DIR="${STATIC_DIR:-/tmp/pacer-static-upstream}"
NGINX="${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
  local port=${1:-$(free_port)}
  mkdir -p "$DIR"
  # The usage is fixed, so costs and token counts are predictable.
  local completion='{"id":"chatcmpl-static","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"The invoice total is 1,234.56 EUR, due on 2024-03-01."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":300,"completion_tokens":16,"total_tokens":316,"prompt_tokens_details":{"cached_tokens":0}},"system_fingerprint":"fp_static"}'
  local models='{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1700000000,"owned_by":"system"}]}'
  cat >"$DIR/nginx.conf" <<EOF
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/error.log warn;
daemon on;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $DIR/body;
  proxy_temp_path $DIR/proxy;
  fastcgi_temp_path $DIR/fastcgi;
  uwsgi_temp_path $DIR/uwsgi;
  scgi_temp_path $DIR/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  client_body_buffer_size 64k;
  server {
    listen 127.0.0.1:$port;
    default_type application/json;
    location = /v1/chat/completions { return 200 '$completion'; }
    location = /v1/models { return 200 '$models'; }
    location / { return 404 '{"error":{"message":"not found","type":"invalid_request_error"}}'; }
  }
}
EOF
  "$NGINX" -p "$DIR" -c "$DIR/nginx.conf" -e "$DIR/error.log"
  for _ in $(seq 50); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/v1/models" 2>/dev/null; then
      echo "http://127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  echo "static_upstream: nginx did not answer on port $port; see $DIR/error.log" >&2
  stop
  return 1
}

stop() {
  [[ -f "$DIR/nginx.pid" ]] || return 0
  local pid
  pid=$(cat "$DIR/nginx.pid")
  kill -QUIT "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || { rm -f "$DIR/nginx.pid"; return 0; }; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$DIR/nginx.pid"
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop ;;
  *) echo "usage: $0 start [PORT] | stop" >&2; exit 2 ;;
esac
