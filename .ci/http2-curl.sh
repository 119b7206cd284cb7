#!/usr/bin/env bash
# HTTP/2 towards clients, checked with a real curl (nghttp2): h2c with prior
# knowledge on a plaintext listener, ALPN h2 and http/1.1 on a TLS listener.
# Loopback only; each proxy's upstream is its own admin listener, so nothing
# else is needed. Installs curl/openssl with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! curl --version 2>/dev/null | grep -q 'HTTP2' || ! command -v openssl >/dev/null; then
  apt-get update -qq && apt-get install -y -qq curl openssl >/dev/null
fi
[ -x bin/shadowproxy ] || make build

dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

base=$((20000 + RANDOM % 20000))
start() { # name listen admin extra
  cat > "$dir/$1.yaml" <<YAML
listen: 127.0.0.1:$2
admin_listen: 127.0.0.1:$3
log: {level: warn}
$4
upstreams: [{name: admin, url: "http://127.0.0.1:$3"}]
routes: [{name: all, upstream: admin}]
YAML
  ./bin/shadowproxy run -config "$dir/$1.yaml" & pids+=($!)
  for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$3/readyz" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "proxy $1 did not start"; exit 1
}
expect() { # want got what
  if [ "$1" != "$2" ]; then echo "FAIL $3: got '$2', want '$1'"; exit 1; fi
  echo "ok   $3: $2"
}

start h2c $base $((base + 1)) "http2: {enabled: true, h2c: true}"
expect "2 200" "$(curl -sS --http2-prior-knowledge -o /dev/null -w '%{http_version} %{http_code}' "http://127.0.0.1:$base/healthz")" "curl --http2-prior-knowledge"
expect "1.1 200" "$(curl -sS --http1.1 -o /dev/null -w '%{http_version} %{http_code}' "http://127.0.0.1:$base/healthz")" "curl --http1.1 on the h2c listener"
# curl --http2 on plaintext tries the Upgrade to h2c, which is never honoured.
expect "1.1 200" "$(curl -sS --http2 -o /dev/null -w '%{http_version} %{http_code}' "http://127.0.0.1:$base/healthz")" "curl --http2 (Upgrade: h2c refused, stays HTTP/1.1)"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
start tls $((base + 2)) $((base + 3)) "tls: {cert_file: $dir/cert.pem, key_file: $dir/key.pem}
http2: {enabled: true}"
expect "2 200" "$(curl -sS --http2 --cacert "$dir/cert.pem" -o /dev/null -w '%{http_version} %{http_code}' "https://127.0.0.1:$((base + 2))/healthz")" "curl --http2 over TLS (ALPN h2)"
expect "1.1 200" "$(curl -sS --http1.1 --cacert "$dir/cert.pem" -o /dev/null -w '%{http_version} %{http_code}' "https://127.0.0.1:$((base + 2))/healthz")" "curl --http1.1 over TLS"
echo "http2 with curl: all passed"
