#!/usr/bin/env bash
# bench/compare.sh — shadowproxy side by side with direct, nginx and HAProxy.
#
# Run by `make bench-compare` (after `make build`, so bin/shadowproxy exists).
# Installs wrk, nginx and haproxy from Debian when missing, then measures, on
# loopback only, these configurations side by side:
#
#   direct                   wrk -> backend (the limit)
#   shadowproxy              wrk -> shadowproxy -> backend
#   nginx                    wrk -> nginx (1 worker, upstream keepalive) -> backend
#   haproxy                  wrk -> HAProxy (nbthread 1) -> backend
#   shadowproxy-shadow-fast  shadowproxy, 100% shadow to a fast shadow backend
#   nginx-mirror-fast        nginx `mirror` to the same
#   shadowproxy-shadow-slow  shadowproxy, 100% shadow to a 200 ms shadow backend
#   nginx-mirror-slow        nginx `mirror` to the same
#   shadowproxy-64k, nginx-64k, haproxy-64k   the same with 64 KiB responses
#   shadowproxy-1m, nginx-1m, haproxy-1m      the same with 1 MiB responses
#
# Then the scale phase: shadowproxy, nginx and HAProxy each take BENCH_SCALE_CONNS
# (10,000) concurrent keep-alive connections (the script raises the open-file
# limit), with req/s, p99 and the resident memory the connections add (VmRSS
# sampled in the middle of the first pass, less VmRSS before the scale phase,
# per connection; later passes are reported apart).
#
# Pinning: wrk runs on CPU 0, every server (proxy under test and backends) on
# CPU 1, so each proxy gets the same one-core budget (Go servers run with
# GOMAXPROCS=1, nginx with one worker, HAProxy with one thread).
#
# Every configuration is started (each with backends of its own) and warmed
# up, then stays up while the load moves from one to the next in short
# slices, pass after pass, each pass in the opposite order of the one before
# (A B C ... C B A ...): the noise of a shared machine (other tenants,
# stalls of the whole VM) then falls on every configuration alike instead of
# on whichever ran during a bad second, and the median over passes drops a
# bad slice. Saturation slices (wrk -t2 -c64 --latency) give req/s, latency
# and the proxy's CPU per request (/proc/PID/stat before and after);
# light-load slices (16 connections each pausing ~4 ms between requests) give
# the cost of the hop rather than queueing. At the end: the backends' request
# and accepted-connection counts, shadowproxy's dropped count and the
# proxy's peak RSS (VmHWM). An idle configuration costs nothing, except that
# a shadowproxy with a slow shadow keeps draining its queue (64 requests in
# flight, ~320/s) for a few seconds after its saturation slices.
# Raw records and the Markdown report go to bench/results/; the report is
# printed too. Exits non-zero when a configuration fails to serve.
#
# Why wrk: it is in Debian (nothing to build, anyone can rerun the figures),
# it is a C event loop that pushes >100k req/s from one core, so "direct"
# measures the backend rather than the load generator, it reports
# percentiles from a full latency histogram, and its Lua hooks give the paced
# light-load shape (delay()) and a machine-readable summary (done()). It
# measures from request send, so like any closed-loop tool it under-reports
# queueing at saturation (coordinated omission): the light-load run is the
# latency figure to read.
#
# Environment (durations in wrk syntax, e.g. 8s):
#   BENCH_DURATION=2s          one saturation slice
#   BENCH_LIGHT_DURATION=3s    one light-load slice
#   BENCH_WARMUP=1s            warm-up of each configuration
#   BENCH_ROUNDS=4             passes over the configurations (figures are medians over them)
#   BENCH_CONNECTIONS=64       saturation connections (BENCH_THREADS=2 wrk threads)
#   BENCH_LIGHT_CONNECTIONS=16 BENCH_LIGHT_DELAY_MS=4
#   BENCH_SLOW_DELAY=200ms     delay of the slow shadow
#   BENCH_SHADOW_WORKERS=64 BENCH_SHADOW_QUEUE=4096   shadowproxy shadow: section
#   BENCH_CONFIGS="direct nginx ..."   subset / order of configurations
#   BENCH_SCALE_CONNS=10000 BENCH_SCALE_DURATION=4s   the scale phase (BENCH_SCALE_CONNS=0: skip it)
#   BENCH_TUNED_ENV="GOGC=800"  adds a "-tuned" twin of every shadowproxy configuration, run with this env
#   BENCH_SHADOWPROXY_ENV=""   extra env for every shadowproxy run
#   BENCH_BASELINE_BIN=path    adds a "-baseline" twin of every shadowproxy configuration run with
#                              that binary (an earlier build), so a change is measured side by side
#   BENCH_OUT=bench/results/latest.md   BENCH_KEEP=1 keeps the temp dir
#   SHADOWPROXY_BIN=bin/shadowproxy
set -euo pipefail

PATH="$PATH:/usr/sbin:/sbin"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

SAT_DURATION=${BENCH_DURATION:-2s}
LIGHT_DURATION=${BENCH_LIGHT_DURATION:-3s}
WARMUP=${BENCH_WARMUP:-1s}
ROUNDS=${BENCH_ROUNDS:-4}
SAT_CONNS=${BENCH_CONNECTIONS:-64}
SAT_THREADS=${BENCH_THREADS:-2}
LIGHT_CONNS=${BENCH_LIGHT_CONNECTIONS:-16}
LIGHT_DELAY_MS=${BENCH_LIGHT_DELAY_MS:-4}
SLOW_DELAY=${BENCH_SLOW_DELAY:-200ms}
SHADOW_WORKERS=${BENCH_SHADOW_WORKERS:-64}
SHADOW_QUEUE=${BENCH_SHADOW_QUEUE:-4096}
DEFAULT_CONFIGS="direct shadowproxy nginx haproxy shadowproxy-shadow-fast nginx-mirror-fast shadowproxy-shadow-slow nginx-mirror-slow shadowproxy-64k nginx-64k haproxy-64k shadowproxy-1m nginx-1m haproxy-1m"
SCALE_CONNS=${BENCH_SCALE_CONNS:-10000}
SCALE_DURATION=${BENCH_SCALE_DURATION:-4s}
CONFIGS=${BENCH_CONFIGS:-$DEFAULT_CONFIGS}
TUNED_ENV=${BENCH_TUNED_ENV:-}
# Upstream settings of the "-tuned" twins (set empty to run no twins unless
# BENCH_TUNED_ENV is set): by default the opt-in pipelining.
TUNED_UPSTREAM=${BENCH_TUNED_UPSTREAM-pipeline_conns: 4}
SP_ENV=${BENCH_SHADOWPROXY_ENV:-}
OUT=${BENCH_OUT:-$ROOT/bench/results/latest.md}
SP_BIN=${SHADOWPROXY_BIN:-$ROOT/bin/shadowproxy}
BASELINE_BIN=${BENCH_BASELINE_BIN:-}
REQUEST_PATH='/api/items?id=42'

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools

# install_tools installs what is missing from Debian, quietly and only once.
# Package scripts must not start the system nginx/haproxy services (they
# would listen on every interface), so a policy-rc.d that forbids starting
# services is put in place for the install when there is none.
install_tools() {
	local -a pkgs=()
	command -v wrk >/dev/null || pkgs+=(wrk)
	command -v nginx >/dev/null || pkgs+=(nginx)
	command -v haproxy >/dev/null || pkgs+=(haproxy)
	command -v taskset >/dev/null || pkgs+=(util-linux)
	((${#pkgs[@]} == 0)) && return 0
	[[ $(id -u) == 0 ]] || die "missing ${pkgs[*]}: install them (apt-get install ${pkgs[*]}) or run as root"
	command -v apt-get >/dev/null || die "missing ${pkgs[*]} and no apt-get to install them"
	log "installing ${pkgs[*]} from Debian"
	local policy=/usr/sbin/policy-rc.d made_policy=""
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		made_policy=1
	fi
	local rc=0
	{
		DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
	} >"$WORK/apt.log" 2>&1 || rc=$?
	[[ -n $made_policy ]] && rm -f "$policy"
	((rc == 0)) || {
		tail -n 20 "$WORK/apt.log" >&2
		die "apt-get failed"
	}
}

# ---------------------------------------------------------------- processes

PIDS=()
WORK=""

# stop_pids sends SIGTERM to each pid, waits up to 5 s for all, then SIGKILLs
# whatever is left.
stop_pids() {
	local pid i
	for pid in "$@"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for ((i = 0; i < 50; i++)); do
		local alive=0
		for pid in "$@"; do
			kill -0 "$pid" 2>/dev/null && alive=1
		done
		((alive == 0)) && break
		sleep 0.1
	done
	for pid in "$@"; do
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if ((${#PIDS[@]} > 0)); then
		stop_pids "${PIDS[@]}"
	fi
	if [[ -n $WORK && -d $WORK ]]; then
		if [[ -n ${BENCH_KEEP:-} ]]; then
			log "kept $WORK"
		else
			rm -rf "$WORK"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: start a server pinned to the server CPU, logging to
# $WORK/NAME.log; its pid is in LAST_PID.
LAST_PID=""
start() {
	local name=$1
	shift
	"${PIN_SERVER[@]}" "$@" >"$WORK/$name.log" 2>&1 &
	LAST_PID=$!
	PIDS+=("$LAST_PID")
}

# cpu_ticks PID: utime+stime in clock ticks (fields 14 and 15 of stat; the
# command name in field 2 may hold spaces, so split after its ')').
cpu_ticks() {
	local s rest
	s=$(<"/proc/$1/stat")
	rest=${s##*) }
	local -a f
	read -r -a f <<<"$rest"
	echo $((f[11] + f[12]))
}

# status_kib PID FIELD: a kB field of the process's status (VmHWM, VmRSS),
# 0 when it is absent.
status_kib() {
	local k v _
	while read -r k v _; do
		if [[ $k == "$2:" ]]; then
			echo "$v"
			return
		fi
	done <"/proc/$1/status"
	echo 0
}

# peak_rss_kib PID: VmHWM of the process.
peak_rss_kib() { status_kib "$1" VmHWM; }

# child_of PID: the first child of PID (nginx's worker).
child_of() {
	local c=""
	local i
	for ((i = 0; i < 50; i++)); do
		read -r c _ <"/proc/$1/task/$1/children" || true
		[[ -n $c ]] && break
		sleep 0.1
	done
	[[ -n $c ]] || return 1
	echo "$c"
}

# start_backend NAME [DELAY]: a bench backend on an ephemeral loopback port;
# sets BACKEND_PID and BACKEND_ADDR.
BACKEND_PID="" BACKEND_ADDR=""
start_backend() {
	local name=$1 delay=${2:-0s} size=${3:-1024}
	local addrfile="$WORK/$name.addr"
	rm -f "$addrfile"
	start "$name" env GOMAXPROCS=1 "$WORK/backend" -listen 127.0.0.1:0 -addr-file "$addrfile" -delay "$delay" -body-size "$size" -name "$name"
	BACKEND_PID=$LAST_PID
	local i
	for ((i = 0; i < 100; i++)); do
		[[ -s $addrfile ]] && break
		kill -0 "$BACKEND_PID" 2>/dev/null || die "backend $name exited: $(tail -n 5 "$WORK/$name.log")"
		sleep 0.05
	done
	[[ -s $addrfile ]] || die "backend $name did not start"
	read -r BACKEND_ADDR <"$addrfile"
}

# ---------------------------------------------------------------- configs

write_shadowproxy_config() { # FILE LISTEN ADMIN PRIMARY [SHADOW [UPSTREAM_EXTRAS]]
	local file=$1 listen=$2 admin=$3 primary=$4 shadow=${5:-} extras=${6:-}
	[[ -n $extras ]] && extras=", $extras"
	{
		echo "listen: $listen"
		echo "admin_listen: $admin"
		# Room for the scale phase's 10,000 client connections and the
		# harness's own (the default limit is exactly 10,000).
		echo "limits: {max_connections: 20000}"
		echo "log: {level: warn, format: json}"
		echo "upstreams:"
		echo "  - {name: primary, url: \"http://$primary\"$extras}"
		[[ -n $shadow ]] && echo "  - {name: shadow, url: \"http://$shadow\"$extras}"
		echo "routes:"
		echo "  - name: all"
		echo "    upstream: primary"
		if [[ -n $shadow ]]; then
			echo "    shadow: {targets: [shadow], percent: 100, workers: $SHADOW_WORKERS, queue_size: $SHADOW_QUEUE, timeout: 5s}"
		fi
	} >"$file"
}

write_nginx_config() { # FILE LISTEN PRIMARY [SHADOW]
	local file=$1 listen=$2 primary=$3 shadow=${4:-}
	local dir
	dir=$(dirname "$file")
	mkdir -p "$dir/tmp"
	cat >"$file" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections 32768; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_requests 1000000;
    upstream primary {
        server $primary;
        keepalive 64;
        keepalive_requests 1000000;
    }
EOF
	if [[ -n $shadow ]]; then
		cat >>"$file" <<EOF
    upstream shadow {
        server $shadow;
        keepalive 64;
        keepalive_requests 1000000;
    }
EOF
	fi
	cat >>"$file" <<EOF
    server {
        listen $listen;
        location / {
EOF
	[[ -n $shadow ]] && printf '            mirror /__mirror;\n' >>"$file"
	cat >>"$file" <<EOF
            proxy_pass http://primary;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
EOF
	if [[ -n $shadow ]]; then
		cat >>"$file" <<EOF
        location = /__mirror {
            internal;
            proxy_pass http://shadow\$request_uri;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Shadowproxy-Shadow 1;
        }
EOF
	fi
	printf '    }\n}\n' >>"$file"
}

write_haproxy_config() { # FILE LISTEN PRIMARY
	cat >"$1" <<EOF
global
    nbthread 1
    maxconn $HAPROXY_MAXCONN
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    http-reuse safe
frontend fe
    bind $2
    default_backend be
backend be
    server primary $3 maxconn 512
EOF
}

# ---------------------------------------------------------------- measuring

FAILED=()

# run_wrk SHAPE URL DURATION: one wrk run pinned to the load CPU; prints its
# summary line.
run_wrk() {
	local shape=$1 url=$2 duration=$3 out
	local -a args
	if [[ $shape == light ]]; then
		args=(-t"$SAT_THREADS" -c"$LIGHT_CONNS" -d"$duration")
	else
		args=(-t"$SAT_THREADS" -c"$SAT_CONNS" -d"$duration" --latency)
	fi
	local delay=0
	[[ $shape == light ]] && delay=$LIGHT_DELAY_MS
	out=$(WRK_DELAY_MS=$delay "${PIN_LOAD[@]}" wrk "${args[@]}" -s "$ROOT/bench/wrk/report.lua" "$url" 2>&1) || {
		log "wrk failed: $out"
		return 1
	}
	grep '^requests=' <<<"$out" | tail -n 1
}

# field LINE KEY: the value of KEY=... in a summary line.
field() {
	local kv
	for kv in $1; do
		[[ $kv == "$2="* ]] && echo "${kv#*=}" && return
	done
	echo 0
}

# served LINE: true when a run answered requests and at most 1% failed.
served() {
	local req err non2xx
	req=$(field "$1" requests)
	err=$(field "$1" errors)
	non2xx=$(field "$1" non2xx)
	((req > 0 && (err + non2xx) * 100 <= req))
}

# measure ROUND CONFIG SHAPE URL DURATION PID: a measured run with the CPU
# time PID used during it.
measure() {
	local round=$1 cfg=$2 shape=$3 url=$4 duration=$5 pid=$6 t0 t1 line
	t0=$(cpu_ticks "$pid")
	line=$(run_wrk "$shape" "$url" "$duration") || return 1
	t1=$(cpu_ticks "$pid")
	local cpu
	cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" 'BEGIN { printf "%.3f", (b - a) / hz }')
	echo "phase round=$round config=$cfg shape=$shape cpu_s=$cpu $line" >>"$RAW"
	served "$line" || {
		log "$cfg ($shape) did not serve: $line"
		return 1
	}
	log "  $cfg $shape: $(field "$line" requests) requests, p99 $(field "$line" p99_us) µs, cpu ${cpu}s"
}

backend_stat() { # ADDR KEY
	local json
	json=$("$WORK/benchctl" get "$1" /__stats) || return 1
	json=${json#*\""$2"\":}
	echo "${json%%[,\}]*}"
}

# Per configuration: where the load goes, the process whose CPU and RSS
# are measured, the backends, the admin listener (shadowproxy) and whether
# it has failed.
declare -A C_TARGET=() C_PID=() C_PRIMARY=() C_SHADOW=() C_ADMIN=() C_FAILED=()

# fail CONFIG WHY: record a configuration that stopped serving; it is left
# out of the remaining slices.
fail() {
	log "$1: $2"
	C_FAILED[$1]=1
	FAILED+=("$1")
}

# setup_config CONFIG: start the backends and the server of CONFIG and warm
# it up. Every configuration stays up until the end, idle while the load is
# on another one.
setup_config() {
	local cfg=$1
	local -a ports
	mapfile -t ports < <("$WORK/benchctl" ports 2)
	local listen="127.0.0.1:${ports[0]}" admin="127.0.0.1:${ports[1]}"
	local dir="$WORK/$cfg"
	mkdir -p "$dir"

	local shape=${cfg%-tuned}
	shape=${shape%-baseline}
	local size=1024
	case $shape in
	*-64k) size=65536 shape=${shape%-64k} ;;
	*-1m) size=1048576 shape=${shape%-1m} ;;
	esac
	start_backend "primary-$cfg" 0s "$size"
	local primary=$BACKEND_ADDR primary_pid=$BACKEND_PID shadow=""
	case $shape in
	*-fast)
		start_backend "shadow-$cfg"
		shadow=$BACKEND_ADDR
		;;
	*-slow)
		start_backend "shadow-$cfg" "$SLOW_DELAY"
		shadow=$BACKEND_ADDR
		;;
	esac

	local target=$listen pid="" env_extra=$SP_ENV role=$shape upstream_extra="" bin=$SP_BIN
	[[ $cfg == *-baseline ]] && bin=$BASELINE_BIN
	if [[ $cfg == *-tuned ]]; then
		env_extra="$SP_ENV $TUNED_ENV"
		upstream_extra=$TUNED_UPSTREAM
	fi
	case $role in
	direct)
		target=$primary
		pid=$primary_pid
		;;
	shadowproxy | shadowproxy-shadow-*)
		write_shadowproxy_config "$dir/shadowproxy.yaml" "$listen" "$admin" "$primary" "$shadow" "$upstream_extra"
		# shellcheck disable=SC2086 # env_extra is a list of NAME=VALUE words
		start "$cfg" env GOMAXPROCS=1 $env_extra "$bin" run -config "$dir/shadowproxy.yaml"
		pid=$LAST_PID
		C_ADMIN[$cfg]=$admin
		;;
	nginx | nginx-mirror-*)
		write_nginx_config "$dir/nginx.conf" "$listen" "$primary" "$shadow"
		start "$cfg" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
		if "$WORK/benchctl" wait "$listen" 10s; then
			pid=$(child_of "$LAST_PID") || pid=""
		fi
		;;
	haproxy)
		write_haproxy_config "$dir/haproxy.cfg" "$listen" "$primary"
		start "$cfg" haproxy -db -f "$dir/haproxy.cfg"
		pid=$LAST_PID
		;;
	*) die "unknown configuration $cfg" ;;
	esac
	C_TARGET[$cfg]=$target C_PID[$cfg]=$pid C_PRIMARY[$cfg]=$primary C_SHADOW[$cfg]=$shadow

	local warm=""
	if [[ -z $pid ]] || ! "$WORK/benchctl" wait "$target" 10s; then
		tail -n 5 "$WORK/$cfg.log" "$dir/error.log" >&2 2>/dev/null || true
		fail "$cfg" "did not start (its log ends above)"
	elif ! warm=$(run_wrk sat "http://$target$REQUEST_PATH" "$WARMUP") || ! served "$warm"; then
		fail "$cfg" "failed its warm-up: ${warm:-wrk failed}"
	fi
}

# run_slices SHAPE DURATION CONFIG...: ROUNDS passes over the
# configurations, each pass in the opposite order of the one before, one
# slice of load on each.
run_slices() {
	local shape=$1 duration=$2
	shift 2
	local -a cfgs=("$@")
	local round i cfg
	for ((round = 1; round <= ROUNDS; round++)); do
		log "$shape: pass $round of $ROUNDS"
		for ((i = 0; i < ${#cfgs[@]}; i++)); do
			if ((round % 2 == 1)); then cfg=${cfgs[i]}; else cfg=${cfgs[${#cfgs[@]} - 1 - i]}; fi
			[[ -n ${C_FAILED[$cfg]:-} ]] && continue
			measure "$round" "$cfg" "$shape" "http://${C_TARGET[$cfg]}$REQUEST_PATH" "$duration" "${C_PID[$cfg]}" ||
				fail "$cfg" "stopped serving ($shape, pass $round)"
		done
	done
}

# vm_rss_kib PID: VmRSS of the process.
vm_rss_kib() { status_kib "$1" VmRSS; }

# run_scale CONFIG...: ROUNDS passes (alternating order) of SCALE_CONNS
# keep-alive connections on each configuration; VmRSS is sampled before
# the first pass (memory a process took for connections is not given back
# between passes) and in the middle of each run, while every connection is
# open.
run_scale() {
	local -a cfgs=("$@")
	local round i cfg
	local -A rss_before=()
	for cfg in "${cfgs[@]}"; do
		rss_before[$cfg]=$(vm_rss_kib "${C_PID[$cfg]}")
	done
	local half
	half=$(awk -v d="${SCALE_DURATION%s}" 'BEGIN { print d / 2 }')
	for ((round = 1; round <= ROUNDS; round++)); do
		log "scale ($SCALE_CONNS connections): pass $round of $ROUNDS"
		for ((i = 0; i < ${#cfgs[@]}; i++)); do
			if ((round % 2 == 1)); then cfg=${cfgs[i]}; else cfg=${cfgs[${#cfgs[@]} - 1 - i]}; fi
			[[ -n ${C_FAILED[$cfg]:-} ]] && continue
			local pid=${C_PID[$cfg]} rss0 rss1 t0 t1 out line
			rss0=${rss_before[$cfg]}
			t0=$(cpu_ticks "$pid")
			WRK_DELAY_MS=0 "${PIN_LOAD[@]}" wrk -t"$SAT_THREADS" -c"$SCALE_CONNS" -d"$SCALE_DURATION" --latency -s "$ROOT/bench/wrk/report.lua" \
				"http://${C_TARGET[$cfg]}$REQUEST_PATH" >"$WORK/scale.out" 2>&1 &
			local wpid=$!
			sleep "$half"
			rss1=$(vm_rss_kib "$pid")
			wait "$wpid" || true
			t1=$(cpu_ticks "$pid")
			line=$(grep '^requests=' "$WORK/scale.out" | tail -n 1)
			if [[ -z $line ]]; then
				log "$cfg: scale run failed: $(tail -n 3 "$WORK/scale.out")"
				continue
			fi
			local cpu
			cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" 'BEGIN { printf "%.3f", (b - a) / hz }')
			echo "scale round=$round config=$cfg conns=$SCALE_CONNS rss0_kib=$rss0 rss1_kib=$rss1 cpu_s=$cpu $line" >>"$RAW"
			log "  $cfg scale: $(field "$line" requests) requests, $(field "$line" errors) errors, p99 $(field "$line" p99_us) µs, RSS $rss0 -> $rss1 KiB"
		done
	done
}

# record_counts CONFIG: the backends' counts, the proxy's peak RSS and
# shadowproxy's shadow outcomes over the whole run.
record_counts() {
	local cfg=$1 rec
	local primary=${C_PRIMARY[$cfg]} shadow=${C_SHADOW[$cfg]} admin=${C_ADMIN[$cfg]:-}
	rec="cell round=all config=$cfg rss_kib=$(peak_rss_kib "${C_PID[$cfg]}")"
	rec+=" primary_requests=$(backend_stat "$primary" requests) primary_conns=$(backend_stat "$primary" conns)"
	if [[ -n $shadow ]]; then
		rec+=" shadow_requests=$(backend_stat "$shadow" requests) shadow_conns=$(backend_stat "$shadow" conns)"
		if [[ -n $admin ]]; then
			rec+=" shadow_dropped=$("$WORK/benchctl" metric "$admin" shadowproxy_shadow_requests_total 'outcome="dropped"')"
			rec+=" shadow_ok=$("$WORK/benchctl" metric "$admin" shadowproxy_shadow_requests_total 'outcome="ok"')"
		fi
	fi
	echo "$rec" >>"$RAW"
}

# ---------------------------------------------------------------- main

main() {
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/shadowproxy-bench.XXXXXX")
	# The scale phase holds BENCH_SCALE_CONNS client connections and as many
	# upstream ones; every process started from here inherits the limit.
	ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
	NOFILE=$(ulimit -n)
	[[ $NOFILE == unlimited ]] && NOFILE=1048576
	HAPROXY_MAXCONN=$(((NOFILE - 200) / 2))
	((HAPROXY_MAXCONN > 32768)) && HAPROXY_MAXCONN=32768
	install_tools
	[[ -x $SP_BIN ]] || die "$SP_BIN not found: run make build (or make bench-compare)"
	command -v go >/dev/null || die "go not found"

	(cd "$ROOT" && go build -o "$WORK/backend" ./bench/backend && go build -o "$WORK/benchctl" ./bench/benchctl)

	local ncpu
	ncpu=$(nproc)
	if ((ncpu >= 2)); then
		PIN_LOAD=(taskset -c 0)
		PIN_SERVER=(taskset -c 1)
		PINNED="wrk on CPU 0, every server on CPU 1"
	else
		PIN_LOAD=()
		PIN_SERVER=()
		PINNED="no (only $ncpu CPU)"
		log "only $ncpu CPU: running unpinned"
	fi
	HZ=$(getconf CLK_TCK)

	local -a configs
	read -r -a configs <<<"$CONFIGS"
	if [[ -n "$TUNED_ENV$TUNED_UPSTREAM" && " $CONFIGS " != *"-tuned "* ]]; then
		# A tuned twin right after every shadowproxy configuration.
		local -a with=()
		local c
		for c in "${configs[@]}"; do
			with+=("$c")
			[[ $c == shadowproxy* && $c != *-64k && $c != *-1m ]] && with+=("$c-tuned")
		done
		configs=("${with[@]}")
	fi
	if [[ -n $BASELINE_BIN && " $CONFIGS " != *"-baseline "* ]]; then
		[[ -x $BASELINE_BIN ]] || die "BENCH_BASELINE_BIN $BASELINE_BIN is not an executable"
		local -a withb=()
		local cb
		for cb in "${configs[@]}"; do
			withb+=("$cb")
			[[ $cb == shadowproxy* && $cb != *-tuned && $cb != *-64k && $cb != *-1m ]] && withb+=("$cb-baseline")
		done
		configs=("${withb[@]}")
	fi

	mkdir -p "$(dirname "$OUT")"
	RAW="${OUT%.md}.raw"
	: >"$RAW"
	{
		echo "meta date=$(date -u '+%Y-%m-%d %H:%M UTC')"
		echo "meta machine=$ncpu CPUs, $(uname -sr), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
		echo "meta pinning=$PINNED"
		echo "meta shadowproxy=$("$SP_BIN" version 2>&1 | head -n 1) $([[ -n $SP_ENV ]] && echo "env: $SP_ENV")"
		[[ -n "$TUNED_ENV$TUNED_UPSTREAM" ]] && echo "meta shadowproxy-tuned=env [$TUNED_ENV] upstream [$TUNED_UPSTREAM]"
		[[ -n $BASELINE_BIN ]] && echo "meta shadowproxy-baseline=$("$BASELINE_BIN" version 2>&1 | head -n 1) ($BASELINE_BIN)"
		echo "meta nginx=$(nginx -v 2>&1 | head -n 1)"
		echo "meta haproxy=$(haproxy -v 2>&1 | head -n 1)"
		echo "meta wrk=$(wrk --version 2>&1 | head -n 1 || true)"
		echo "meta load=saturation wrk -t$SAT_THREADS -c$SAT_CONNS -d$SAT_DURATION --latency; light wrk -t$SAT_THREADS -c$LIGHT_CONNS -d$LIGHT_DURATION with delay() $LIGHT_DELAY_MS ms; warm-up $WARMUP; $ROUNDS passes, configurations interleaved slice by slice"
		echo "meta backend=Go fasthttp, ~1 KiB JSON, GOMAXPROCS=1; slow shadow answers after $SLOW_DELAY"
		echo "meta shadow=shadowproxy shadow: {percent: 100, workers: $SHADOW_WORKERS, queue_size: $SHADOW_QUEUE}; nginx mirror location proxying to a keepalive upstream"
		echo "meta command=make bench-compare"
	} >>"$RAW"

	LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
	log "configurations: ${configs[*]}; $ROUNDS passes of $SAT_DURATION saturation and $LIGHT_DURATION light load each"
	local cfg
	for cfg in "${configs[@]}"; do
		log "starting $cfg"
		setup_config "$cfg"
	done
	run_slices sat "$SAT_DURATION" "${configs[@]}"
	run_slices light "$LIGHT_DURATION" "${configs[@]}"
	if ((SCALE_CONNS > 0)); then
		local -a scale=()
		for cfg in shadowproxy shadowproxy-tuned shadowproxy-baseline nginx haproxy; do
			[[ " ${configs[*]} " == *" $cfg "* && -z ${C_FAILED[$cfg]:-} ]] && scale+=("$cfg")
		done
		local need=$((SCALE_CONNS + 1024))
		if ((HAPROXY_MAXCONN < SCALE_CONNS + 100)) && [[ " ${scale[*]} " == *" haproxy "* ]]; then
			# HAProxy reserves two descriptors per connection up front.
			log "HAProxy's maxconn ($HAPROXY_MAXCONN, from the open-file limit $NOFILE) cannot hold $SCALE_CONNS connections: it sits out the scale phase"
			echo "meta scale_haproxy=left out: the open-file limit ($NOFILE) gives HAProxy maxconn $HAPROXY_MAXCONN < $SCALE_CONNS" >>"$RAW"
			local -a keep=()
			for cfg in "${scale[@]}"; do [[ $cfg == haproxy ]] || keep+=("$cfg"); done
			scale=("${keep[@]}")
		fi
		if ((NOFILE < need)); then
			log "open-file limit $NOFILE is below $need: skipping the scale phase"
		elif ((${#scale[@]} > 0)); then
			echo "meta scale_conns=$SCALE_CONNS" >>"$RAW"
			echo "meta scale=wrk -t$SAT_THREADS -c$SCALE_CONNS -d$SCALE_DURATION --latency; RSS per connection = (VmRSS in the middle of the first pass - VmRSS before the scale phase) / connections" >>"$RAW"
			run_scale "${scale[@]}"
		fi
	fi
	# Let in-flight shadow requests land before counting.
	sleep 0.5
	for cfg in "${configs[@]}"; do
		[[ -n ${C_FAILED[$cfg]:-} ]] || record_counts "$cfg"
	done
	stop_pids "${PIDS[@]}"
	PIDS=()

	echo "meta load average=start $LOAD_START, end $(cut -d' ' -f1-3 /proc/loadavg) (a busy shared machine makes every figure noisier)" >>"$RAW"
	"$WORK/benchctl" report "$RAW" "$OUT"
	log "report: $OUT (raw records: $RAW)"
	if ((${#FAILED[@]} > 0)); then
		die "configurations that failed to serve: ${FAILED[*]}"
	fi
}

PIN_LOAD=()
PIN_SERVER=()
PINNED=""
NOFILE=1024
HAPROXY_MAXCONN=4096
HZ=100
RAW=""
LOAD_START=""
main "$@"
