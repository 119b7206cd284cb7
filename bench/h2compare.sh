#!/usr/bin/env bash
# bench/h2compare.sh — HTTP/2 towards clients: shadowproxy (h2c, prior
# knowledge) against nginx (`listen ... http2`, h2c on a plaintext port),
# both forwarding HTTP/1.1 with keep-alive to the same kind of backend
# (bench/backend). The load is h2load (nghttp2-client), pinned to CPU 0;
# servers run on CPU 1 (GOMAXPROCS=1, one nginx worker), as in compare.sh.
# Slices alternate A B B A ... and the median req/s of each configuration
# is reported, so a noisy second falls on both alike.
#
# Installs nghttp2-client and nginx from Debian when missing (as root).
#
# Environment: H2_DURATION (per slice, default 5s), H2_PASSES (default 4),
# H2_CLIENTS (connections, default 16), H2_STREAMS (concurrent streams per
# connection, default 10).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${H2_DURATION:-5}
PASSES=${H2_PASSES:-4}
CLIENTS=${H2_CLIENTS:-16}
STREAMS=${H2_STREAMS:-10}

log() { printf '[h2bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

pkgs=()
command -v h2load >/dev/null || pkgs+=(nghttp2-client)
command -v nginx >/dev/null || pkgs+=(nginx)
if ((${#pkgs[@]})); then
	[[ $(id -u) == 0 ]] || die "missing ${pkgs[*]}: apt-get install ${pkgs[*]}"
	log "installing ${pkgs[*]}"
	# The nginx package must not start the system service.
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
	rm -f /usr/sbin/policy-rc.d
fi
pin() { if command -v taskset >/dev/null && (($(nproc) > 1)); then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

(cd "$ROOT" && go build -o "$WORK/backend" ./bench/backend && CGO_ENABLED=0 go build -o "$WORK/shadowproxy" ./cmd/shadowproxy)

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((30000 + RANDOM % 20000)); }

backend() { # NAME -> sets BACKEND
	pin 1 env GOMAXPROCS=1 "$WORK/backend" -listen 127.0.0.1:0 -addr-file "$WORK/$1.addr" -name "$1" >"$WORK/$1.log" 2>&1 &
	PIDS+=($!)
	for _ in $(seq 100); do [[ -s $WORK/$1.addr ]] && break; sleep 0.05; done
	[[ -s $WORK/$1.addr ]] || die "backend $1 did not start"
	read -r BACKEND <"$WORK/$1.addr"
}

backend sp-backend
SP=$(port)
SPA=$(port)
cat >"$WORK/sp.yaml" <<YAML
listen: 127.0.0.1:$SP
admin_listen: 127.0.0.1:$SPA
log: {level: warn}
request_id: {disabled: true}
http2: {enabled: true, h2c: true, max_concurrent_streams: 100}
upstreams: [{name: backend, url: "http://$BACKEND", max_conns: 256}]
routes: [{name: all, upstream: backend}]
YAML
pin 1 env GOMAXPROCS=1 "$WORK/shadowproxy" run -config "$WORK/sp.yaml" >"$WORK/sp.log" 2>&1 &
PIDS+=($!)

backend nginx-backend
NG=$(port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx; fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  http2_max_concurrent_streams 100;
  # h2load does not reconnect after a GOAWAY: no per-connection request cap.
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  upstream backend { server $BACKEND; keepalive 256; }
  server {
    listen 127.0.0.1:$NG http2;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
pin 1 nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx.log" 2>&1 &
PIDS+=($!)

for url in "http://127.0.0.1:$SP/" "http://127.0.0.1:$NG/"; do
	for _ in $(seq 100); do h2load -n 1 -c 1 "$url" 2>/dev/null | grep -q '1 succeeded' && break; sleep 0.1; done
	h2load -n 1 -c 1 "$url" 2>/dev/null | grep -q '1 succeeded' || die "$url does not answer HTTP/2: $(h2load -n 1 -c 1 "$url" 2>&1 | tail -5; tail -5 "$WORK"/*.log "$WORK"/nginx/error.log 2>/dev/null)"
done

declare -A RPS FAILED
slice() { # NAME URL
	local out
	out=$(pin 0 h2load -c "$CLIENTS" -m "$STREAMS" -D "$DURATION" --warm-up-time=1 "$2" 2>&1)
	local rps failed
	rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' <<<"$out")
	failed=$(awk '/^requests:/ {print $10}' <<<"$out")
	[[ -n $rps && $rps != 0.00 ]] || die "h2load on $1: $out"
	RPS[$1]+="$rps "
	FAILED[$1]=$((${FAILED[$1]:-0} + ${failed:-0}))
	log "$1: $rps req/s ($failed failed)"
}
for ((p = 0; p < PASSES; p++)); do
	if ((p % 2 == 0)); then
		slice shadowproxy-h2c "http://127.0.0.1:$SP/"; slice nginx-h2c "http://127.0.0.1:$NG/"
	else
		slice nginx-h2c "http://127.0.0.1:$NG/"; slice shadowproxy-h2c "http://127.0.0.1:$SP/"
	fi
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
sp=$(median <<<"${RPS[shadowproxy-h2c]}")
ng=$(median <<<"${RPS[nginx-h2c]}")
printf '\n| configuration | median req/s (%d slices of %ss, h2load -c %d -m %d) | failed | ratio to nginx |\n|---|---|---|---|\n' "$PASSES" "$DURATION" "$CLIENTS" "$STREAMS"
printf '| shadowproxy h2c | %s | %s | %s |\n' "$sp" "${FAILED[shadowproxy-h2c]}" "$(awk -v a="$sp" -v b="$ng" 'BEGIN {printf "%.2f", a/b}')"
printf '| nginx h2c (`listen ... http2`) | %s | %s | 1 |\n' "$ng" "${FAILED[nginx-h2c]}"
