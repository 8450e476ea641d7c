#!/usr/bin/env bash
# Wall time of restoring examples/basic from a remote cache with an empty
# local store: starts nginx (WebDAV, Bazel HTTP cache protocol) on
# loopback, builds one checkout (uploading), then restores a fresh checkout
# at another path with its own empty store, ROUNDS times, and prints the
# median. Needs nginx (apt-get install nginx); builds vbuild in release.
#
#   bash bench/remote_restore.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "needs nginx (apt-get install nginx)" >&2; exit 1; }
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --locked -q -p vbuild
target_dir=${CARGO_TARGET_DIR:-target}
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
vbuild="$target_dir/release/vbuild"

work=$(mktemp -d)
ngx_pid=
cleanup() {
  [ -n "$ngx_pid" ] && kill "$ngx_pid" 2>/dev/null && wait "$ngx_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/ngx/data/cache"
cat > "$work/ngx/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $work/ngx/nginx.pid;
error_log $work/ngx/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $work/ngx/body;
  proxy_temp_path $work/ngx/proxy;
  fastcgi_temp_path $work/ngx/fastcgi;
  uwsgi_temp_path $work/ngx/uwsgi;
  scgi_temp_path $work/ngx/scgi;
  server {
    listen 127.0.0.1:$port;
    root $work/ngx/data;
    client_max_body_size 0;
    location /cache/ { dav_methods PUT; create_full_put_path on; }
  }
}
CONF
"$nginx_bin" -p "$work/ngx" -e "$work/ngx/error.log" -c "$work/ngx/nginx.conf" &
ngx_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
export VBUILD_REMOTE_URL="http://127.0.0.1:$port/cache"

checkout() { # $1 = dir: a copy of examples/basic without build outputs
  mkdir -p "$1" && (cd examples/basic && tar --exclude=out --exclude=dist -cf - .) | (cd "$1" && tar -xf -)
}

checkout "$work/first"
(cd "$work/first" && VBUILD_CACHE_DIR="$work/store-first" "$vbuild" run -j2 //... >/dev/null 2>"$work/first.log") \
  || { cat "$work/first.log" >&2; exit 1; }
grep -q "uploaded" "$work/first.log" || { echo "nothing was uploaded:" >&2; cat "$work/first.log" >&2; exit 1; }

times=()
for i in $(seq "$rounds"); do
  checkout "$work/r$i"
  start=$(date +%s%N)
  (cd "$work/r$i" && VBUILD_CACHE_DIR="$work/store-r$i" "$vbuild" run -j2 //... >/dev/null 2>"$work/r$i.log")
  end=$(date +%s%N)
  grep -q "4 hit (4 remote), 0 miss" "$work/r$i.log" || { echo "round $i was not a full remote hit:" >&2; cat "$work/r$i.log" >&2; exit 1; }
  times+=($(( (end - start) / 1000 )))
done
# For reference: the same fresh checkout built locally, no remote.
cold=()
for i in $(seq "$rounds"); do
  checkout "$work/c$i"
  start=$(date +%s%N)
  (cd "$work/c$i" && VBUILD_CACHE_DIR="$work/store-c$i" "$vbuild" run -j2 --no-remote //... >/dev/null 2>&1)
  end=$(date +%s%N)
  cold+=($(( (end - start) / 1000 )))
done
cold_sorted=($(printf '%s\n' "${cold[@]}" | sort -n))
sorted=($(printf '%s\n' "${times[@]}" | sort -n))
median=${sorted[$(( rounds / 2 ))]}
echo "restore of examples/basic (4 actions) from nginx with an empty local store:"
echo "  median $(awk "BEGIN{printf \"%.1f\", $median/1000}") ms over $rounds rounds (min $(awk "BEGIN{printf \"%.1f\", ${sorted[0]}/1000}") ms, max $(awk "BEGIN{printf \"%.1f\", ${sorted[$((rounds-1))]}/1000}") ms), wall time of \`vbuild run -j2 //...\`"
echo "  for reference, a cold local build of the same checkout (empty store, --no-remote): median $(awk "BEGIN{printf \"%.1f\", ${cold_sorted[$(( rounds / 2 ))]}/1000}") ms"
