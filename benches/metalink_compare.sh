#!/bin/bash
# haul, aria2c and wget2 side by side on one Metalink served by nginx on loopback: a 64 MiB
# file on two mirrors, the first (priority 1) with one flipped byte, the second good; the
# .meta4 has the whole-file SHA-256 and SHA-256 pieces of 256 KiB. Each client runs RUNS times;
# every line says its exit code, wall time, the bytes nginx sent for the file, the requests,
# and whether the output's SHA-256 is the file's.
#
#   cargo build --release && bash benches/metalink_compare.sh [RUNS]
#
# Needs nginx, aria2 and wget2 (apt-get install -y nginx aria2 wget2). A client that keeps
# asking the bad mirror for the same piece is stopped after 30 s.
set -u
runs=${1:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
haul=${HAUL:-$here/target/release/haul}
work=$(mktemp -d)
chmod 755 "$work"   # nginx's workers run as nobody
www=$work/www
mkdir -p "$www/good" "$www/bad" "$work/out"
chmod -R 755 "$www"
python3 - "$www" <<'EOF'
import hashlib, os, sys
www = sys.argv[1]
size, piece = 64 << 20, 256 * 1024
data = bytearray(os.urandom(size))
open(f"{www}/good/dist.iso", "wb").write(data)
bad = bytearray(data)
bad[40_000_000] ^= 1
open(f"{www}/bad/dist.iso", "wb").write(bad)
stat = os.stat(f"{www}/good/dist.iso")
os.utime(f"{www}/bad/dist.iso", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as rsync -a keeps it
hashes = "".join(f"      <hash>{hashlib.sha256(data[i:i + piece]).hexdigest()}</hash>\n"
                 for i in range(0, size, piece))
open(f"{www}/dist.meta4", "w").write(f'''<?xml version="1.0" encoding="UTF-8"?>
<metalink xmlns="urn:ietf:params:xml:ns:metalink">
  <file name="dist.iso">
    <size>{size}</size>
    <hash type="sha-256">{hashlib.sha256(data).hexdigest()}</hash>
    <pieces length="{piece}" type="sha-256">
{hashes}    </pieces>
    <url location="de" priority="1">http://127.0.0.1:18089/bad/dist.iso</url>
    <url location="fr" priority="2">http://127.0.0.1:18089/good/dist.iso</url>
  </file>
</metalink>
''')
open(f"{www}/../expected", "w").write(hashlib.sha256(data).hexdigest())
EOF
chmod 644 "$www"/*/dist.iso "$www/dist.meta4"
cat > "$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 256; }
http {
  types { application/metalink4+xml meta4; }
  log_format bytes '\$request_uri \$status \$body_bytes_sent "\$http_range"';
  server { listen 127.0.0.1:18089; root $www; access_log $work/bytes.log bytes; }
}
EOF
nginx -c "$work/nginx.conf" || exit 1
trap 'nginx -c "$work/nginx.conf" -s stop; rm -rf "$work"' EXIT
expected=$(cut -c1-16 "$work/expected")
url=http://127.0.0.1:18089/dist.meta4

measure() {
  local name=$1; shift
  rm -rf "$work/out" && mkdir -p "$work/out"
  : > "$work/bytes.log"
  local start end rc
  start=$(date +%s.%N)
  timeout 30 "$@" > "$work/client.log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  sleep 0.2
  local bytes requests sum
  bytes=$(awk '$1 ~ /dist.iso/ {s += $3} END {print s + 0}' "$work/bytes.log")
  requests=$(grep -c 'dist.iso' "$work/bytes.log")
  sum=$(sha256sum "$work/out/dist.iso" 2>/dev/null | cut -c1-16)
  local verdict=wrong
  [ "$sum" = "$expected" ] && verdict=exact
  [ -z "$sum" ] && verdict=missing
  printf "%-12s exit=%-3s wall=%6.2fs bytes=%-9s requests=%-4s output=%s\n" \
    "$name" "$rc" "$(echo "$end - $start" | bc)" "$bytes" "$requests" "$verdict"
}

echo "64 MiB, pieces of 256 KiB, mirror 1 serves one bad byte; file SHA-256 $expected..."
for run in $(seq "$runs"); do
  measure "haul" "$haul" --no-config get -q -d "$work/out" "$url"
  measure "haul -x 1" "$haul" --no-config get -q -x 1 -d "$work/out" "$url"
  measure "aria2c" aria2c -q -d "$work/out" "$url"
  measure "wget2" wget2 -q -P "$work/out" --force-metalink "$url"
done
