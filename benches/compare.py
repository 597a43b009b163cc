#!/usr/bin/env python3
"""End-to-end comparison of haul with curl, wget2, aria2c (and axel when installed).

Starts Debian's nginx on a loopback port over generated data, then runs every client on the
same scenarios, alternating clients run by run: a warm-up, then --runs measured runs each.
Every run is verified (SHA-256 of every output file); a fast wrong download does not count.
Prints a markdown table: wall time (median and spread), MB/s or files/s, CPU seconds
(user+sys) and peak RSS of the client process (from /usr/bin/time).

Installs nothing. Needs: nginx, curl, aria2c, wget2, /usr/bin/time
(`apt-get install -y nginx curl aria2 wget2 time`; axel is optional), and a release build
of haul (`cargo build --release`).

Scenarios (a trailing t, as in S1t, runs the scenario with the output on tmpfs, /dev/shm,
where a sync costs nothing: a comparison of the engines alone):
  S1  one 1 GiB file: haul at its defaults and with -x 1 (and --checksum sha-256), beside
      a "durable write floor" row: dd bs=1M conv=fdatasync of the same size, in the same run
  S1ab  haul's defaults against -x 1 alone on the same 1 GiB, interleaved, at least 10 runs
      each (is the ramp ever slower than one connection?)
  S2  2,000 files of 64 KiB, 16 concurrent, beside the durability floor for the same files
      (benches/durability_model.py: the file work alone, fdatasync per file or syncfs per batch)
  S3  200 files of 4 MiB, 8 concurrent, beside dd's durable write floor for 800 MiB
  S6  1 GiB over HTTPS (TLS 1.3, nginx with a private CA made here)
  S7  2,000 files of 64 KiB over HTTPS + HTTP/2, 16 concurrent
  S4  one 512 MiB file from a location with `limit_rate 16m` per connection, 8 connections
      (curl single-connection for contrast, one run)
  S4u the same file without the rate limit: haul -x 8 against -x 1
  S5  peak RSS for 1 GiB and 4 GiB single downloads
  H256  high concurrency: 20,000 files of 64 KiB from 4 nginx ports (4 hosts), 256 at once
        (haul -j 256 --per-host 64, curl --parallel-max 256, wget2 --max-threads 256,
        aria2c -j 256), to tmpfs
  B404  bulk scale: --bulk-urls URLs (default 10^5) that 404, 32 concurrent: memory per URL
  Btiny bulk scale: --bulk-files files of 512 B (default 50,000), 16 concurrent, beside the
        durability floor for the same files
  Brerun  haul again over a finished Btiny batch: nothing to transfer

Prints haul's ratio to the fastest peer, and to the floor where one ran, per scenario.

Usage: python3 benches/compare.py [--runs 5] [--scenarios S1,S2,S3,S4,S4u,S5,S6,S7,S1t,S2t,S3t,S7t,H256]
       python3 benches/compare.py --runs 3 --scenarios B404,Btiny [--bulk-urls 1000000] [--bulk-files 50000]
"""

import argparse
import hashlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

MIB = 1 << 20
# (haul binary, the --haul-before binary): each haul row gets a "(before)" twin when set.
BEFORE = None
# Directories of many files, removed when the script ends.
LEFT_FOR_THE_END = []
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def which(name):
    return shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)


def free_ports(count):
    """`count` distinct free loopback ports: the sockets stay bound until all are picked, so
    the kernel cannot hand the same port out twice (nginx refuses a duplicate `listen`)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def write_file(path, size, seed):
    """Writes `size` pseudo-random bytes (a 1 MiB random block, varied per MiB) and returns
    the SHA-256 hex digest."""
    block = hashlib.sha256(seed.encode()).digest() * (MIB // 32)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        written, counter = 0, 0
        while written < size:
            chunk = counter.to_bytes(8, "little") + block[8:]
            chunk = chunk[: min(MIB, size - written)]
            f.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            counter += 1
    return digest.hexdigest()


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            data = f.read(4 * MIB)
            if not data:
                return digest.hexdigest()
            digest.update(data)


def make_certificates(root):
    """A private CA (root/ca.pem) and a certificate for 127.0.0.1 signed by it."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True)
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=haul bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    with open(f"{root}/server.ext", "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext")


class Nginx:
    def __init__(self, root):
        self.root = root
        # The main port, three more of the same server (four "hosts" for the per-host limit,
        # H256), and the TLS port.
        self.port, *self.more_ports, self.tls_port = free_ports(5)
        os.makedirs(f"{root}/tmp", exist_ok=True)
        make_certificates(root)
        conf = f"""
daemon off; master_process off; pid {root}/nginx.pid; error_log {root}/error.log warn;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path {root}/tmp/b; proxy_temp_path {root}/tmp/p; fastcgi_temp_path {root}/tmp/f;
  uwsgi_temp_path {root}/tmp/u; scgi_temp_path {root}/tmp/s;
  default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{self.port} backlog=4096;
    {"".join(f"listen 127.0.0.1:{p} backlog=4096; " for p in self.more_ports)}
    root {root}/www;
    location /slow/ {{ alias {root}/www/; limit_rate 16m; }}
  }}
  server {{
    listen 127.0.0.1:{self.tls_port} ssl http2 backlog=4096;
    ssl_protocols TLSv1.3;
    ssl_certificate {root}/server.pem;
    ssl_certificate_key {root}/server.key;
    http2_max_concurrent_streams 128;
    root {root}/www;
  }}
}}"""
        with open(f"{root}/nginx.conf", "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(
            [which("nginx"), "-c", f"{root}/nginx.conf", "-p", root, "-e", f"{root}/error.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit(f"nginx did not start: {open(f'{root}/error.log').read()}")
                time.sleep(0.05)

    def url(self, path, host=0):
        port = ([self.port] + self.more_ports)[host]
        return f"http://127.0.0.1:{port}{path}"

    def tls_url(self, path):
        return f"https://127.0.0.1:{self.tls_port}{path}"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait()


def timed(command, cwd, any_exit=False):
    """Runs `command` under /usr/bin/time; returns (wall seconds, cpu seconds, peak RSS KiB).
    With any_exit, a non-zero exit (a batch of 404s fails, as it should) is not an error."""
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", *command], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0 and not any_exit:
        raise RuntimeError(f"{command[0]} failed ({result.returncode}): {result.stderr[-500:]}")
    user, system, rss = result.stderr.strip().splitlines()[-1].split()
    return wall, float(user) + float(system), int(rss)


def clean(directory):
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)


def verify(directory, expected):
    for name, digest in expected.items():
        path = os.path.join(directory, name)
        if not os.path.exists(path) or sha256_file(path) != digest:
            raise RuntimeError(f"wrong or missing output {name}")


def run_scenario(title, clients, expected, out, runs, unit_bytes, unit_files=None, any_exit=False, twins=True, keep_runs=True):
    """clients: list of (label, command builder(out dir) -> argv, runs override or None).

    Batches of many files go to a new directory each run, removed only when the scenario
    ends: deleting thousands of files and creating them again at once makes ext4's inode
    allocator the bottleneck (`recently_deleted`), for whichever client runs next. With
    keep_runs=False (batches on tmpfs, whose deletions cost nothing and whose files are memory)
    each run's directory goes as soon as it is verified."""
    if BEFORE and twins:
        clients = clients + [
            (f"{label} (before)", lambda o, b=build: [BEFORE[1] if a == BEFORE[0] else a for a in b(o)], only)
            for label, build, only in clients if label.startswith("haul") and "durability" not in label]
    many = len(expected) > 1
    results = {label: [] for label, _, _ in clients}
    used = []
    for round_index in range(runs + 1):
        for index, (label, build, only) in enumerate(clients):
            if only is not None and round_index > only:
                continue
            run_dir = f"{out}-{round_index}-{index}" if many else out
            clean(run_dir)
            # Every run starts with no dirty pages of the runs before it (writeback of an
            # earlier client's gigabyte must not be charged to the next one).
            os.sync()
            used.append(run_dir)
            wall, cpu, rss = timed(build(run_dir), run_dir, any_exit)
            verify(run_dir, expected)
            if not many or not keep_runs:
                shutil.rmtree(run_dir, ignore_errors=True)
            if round_index > 0 or only == 0:
                results[label].append((wall, cpu, rss))
            print(f"  {title} {label}: {wall:.2f}s", file=sys.stderr)
    for run_dir in used:
        shutil.rmtree(run_dir, ignore_errors=True)
    rows = []
    for label, _, _ in clients:
        samples = results[label]
        walls = sorted(s[0] for s in samples)
        median = statistics.median(walls)
        cpu = statistics.median(s[1] for s in samples)
        rss = max(s[2] for s in samples) / 1024
        if unit_files:
            rate = f"{unit_files / median:.0f} files/s"
        else:
            rate = f"{unit_bytes / median / 1e6:.0f} MB/s"
        rows.append(f"| {title} | {label} | {median:.2f} | {walls[0]:.2f}–{walls[-1]:.2f} | {rate} "
                    f"| {cpu:.2f} | {rss:.1f} |")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenarios", default="S1,S2,S3,S4,S4u,S5,S6,S7,S1t,S2t,S3t,S7t")
    parser.add_argument("--bulk-urls", type=int, default=100_000, help="URLs of scenario B404")
    parser.add_argument("--bulk-files", type=int, default=50_000, help="512-byte files of scenario Btiny")
    parser.add_argument("--haul", default=os.path.join(ROOT, "target/release/haul"))
    parser.add_argument("--haul-before", default=None, help="another haul binary (e.g. the previous commit's) to add as a row of the same run")
    parser.add_argument("--workdir", default=None, help="where data and downloads go (default: a temporary directory under target/)")
    args = parser.parse_args()
    scenarios = args.scenarios.split(",")

    missing = [tool for tool in ["nginx", "curl", "aria2c", "wget2", "openssl"] if not which(tool)]
    if not os.path.exists("/usr/bin/time"):
        missing.append("time (/usr/bin/time)")
    if missing:
        sys.exit(f"missing: {', '.join(missing)}; install with: apt-get install -y nginx curl aria2 wget2 time")
    if not os.path.exists(args.haul):
        sys.exit(f"no haul binary at {args.haul}: run `cargo build --release` first")
    haul = args.haul
    if args.haul_before:
        global BEFORE
        BEFORE = (haul, args.haul_before)
    axel = which("axel")

    base = args.workdir or os.path.join(ROOT, "target")
    os.makedirs(base, exist_ok=True)
    work = tempfile.mkdtemp(prefix="haul-compare-", dir=base)
    www, out = f"{work}/www", f"{work}/out"
    os.makedirs(f"{www}/small")
    os.makedirs(f"{www}/mid")
    print("generating data...", file=sys.stderr)
    digests = {}
    if any(s in scenarios for s in ["S1", "S1t", "S1ab", "S1abt", "S5", "S6", "S6t"]):
        digests["g1.bin"] = write_file(f"{www}/g1.bin", 1024 * MIB, "g1")
    if "S5" in scenarios:
        digests["g4.bin"] = write_file(f"{www}/g4.bin", 4096 * MIB, "g4")
    if any(s in scenarios for s in ["S4", "S4u"]):
        digests["h512.bin"] = write_file(f"{www}/h512.bin", 512 * MIB, "h512")
    small, mid = {}, {}
    if any(s in scenarios for s in ["S2", "S2t", "S7", "S7t"]):
        for i in range(2000):
            small[f"s{i}.bin"] = write_file(f"{www}/small/s{i}.bin", 64 * 1024, f"s{i}")
    if any(s in scenarios for s in ["S3", "S3t"]):
        for i in range(200):
            mid[f"m{i}.bin"] = write_file(f"{www}/mid/m{i}.bin", 4 * MIB, f"m{i}")
    many = {}
    if "H256" in scenarios:
        # 20,000 names: 2,000 files of 64 KiB, each linked under ten names (nginx serves
        # them like any file; every output is still verified by its digest).
        os.makedirs(f"{www}/many")
        for i in range(2000):
            digest = write_file(f"{www}/many/h{i}-0.bin", 64 * 1024, f"h{i}")
            many[f"h{i}-0.bin"] = digest
            for copy in range(1, 10):
                os.link(f"{www}/many/h{i}-0.bin", f"{www}/many/h{i}-{copy}.bin")
                many[f"h{i}-{copy}.bin"] = digest
    tiny = {}
    if "Btiny" in scenarios or "Brerun" in scenarios:
        os.makedirs(f"{www}/tiny")
        for i in range(args.bulk_files):
            tiny[f"t{i}"] = write_file(f"{www}/tiny/t{i}", 512, f"t{i}")
    nginx = Nginx(work)
    ca = f"{work}/ca.pem"
    tmpfs_base = tempfile.mkdtemp(prefix="haul-compare-", dir="/dev/shm") if any(x.endswith("t") or x == "H256" for x in scenarios) else None
    rows = []

    def url_files(name, urls):
        """Writes the URL list (one per line) and curl's config for it; returns both paths."""
        with open(f"{work}/{name}.txt", "w") as f:
            f.write("\n".join(urls) + "\n")
        with open(f"{work}/{name}.curl", "w") as f:
            for u in urls:
                f.write(f'url = "{u}"\n-O\n')
        return f"{work}/{name}.txt", f"{work}/{name}.curl"

    def many_files(title, name, urls, expected, jobs, out, unit_bytes, tls=False, relaxed=False, per_host=None, keep_runs=True):
        listing, curl_config = url_files(name, urls)
        cert = ["--ca-cert", ca] if tls else []
        per_host = per_host or jobs
        clients = [("haul", lambda o: [haul, "get", "-q", "-j", str(jobs), "--per-host", str(per_host), *cert, "-d", o, "-i", listing], None)]
        if relaxed:
            clients.append(("haul --durability relaxed", lambda o: [haul, "get", "-q", "-j", str(jobs), "--per-host", str(jobs), "--durability", "relaxed", *cert, "-d", o, "-i", listing], None))
        clients += [
            ("curl --parallel" + (" (h2)" if tls else ""), lambda o: ["curl", "-sS", *(["--cacert", ca] if tls else []), "--parallel", "--parallel-max", str(jobs), "--output-dir", o, "-K", curl_config], None),
            ("wget2", lambda o: ["wget2", "-q", "--no-robots", *(["--ca-certificate", ca] if tls else []), f"--max-threads={jobs}", "-P", o, "-i", listing], None),
            ("aria2c", lambda o: ["aria2c", "-q", f"-j{jobs}", "-x1", "--file-allocation=none", *([f"--ca-certificate={ca}"] if tls else []), "-d", o, "-i", listing], None),
        ]
        return run_scenario(title, clients, expected, out, args.runs, unit_bytes, unit_files=len(urls), keep_runs=keep_runs)

    def one_file(title, url, name, out, unit_bytes, tls=False):
        expected = {name: digests[name]}
        cert = ["--ca-cert", ca] if tls else []
        clients = [
            ("haul (defaults)", lambda o: [haul, "get", "-q", *cert, "-d", o, url], None),
            ("haul -x 1", lambda o: [haul, "get", "-q", "-x", "1", *cert, "-d", o, url], None),
        ]
        if not tls:
            clients.append(("haul -x 1 --checksum", lambda o: [haul, "get", "-q", "-x", "1", "--checksum", f"sha-256={digests[name]}", "-d", o, url], None))
        clients += [
            ("curl", lambda o: ["curl", "-sS", *(["--cacert", ca] if tls else []), "-o", f"{o}/{name}", url], None),
            ("wget2", lambda o: ["wget2", "-q", "--no-robots", *(["--ca-certificate", ca] if tls else []), "-O", f"{o}/{name}", url], None),
            ("aria2c", lambda o: ["aria2c", "-q", "-x1", "-s1", "--file-allocation=none", *([f"--ca-certificate={ca}"] if tls else []), "-d", o, url], None),
        ]
        return run_scenario(title, clients, expected, out, args.runs, unit_bytes)

    try:
        for suffix in ["", "t"]:
            if suffix and not tmpfs_base:
                continue
            want = lambda name: name + suffix in scenarios
            where = " (tmpfs)" if suffix else ""
            out_base = f"{tmpfs_base}/out" if suffix else out
            if want("S1"):
                if not suffix:
                    rows += disk_floor("S1 durable write floor: dd 1 GiB conv=fdatasync", out_base, 1024, args.runs)
                rows += one_file(f"S1 1 GiB{where}", nginx.url("/g1.bin"), "g1.bin", out_base, 1024 * MIB)
            if want("S1ab"):
                ab_runs = max(10, args.runs)
                clients = [
                    ("haul (defaults)", lambda o: [haul, "get", "-q", "-d", o, nginx.url("/g1.bin")], None),
                    ("haul -x 1", lambda o: [haul, "get", "-q", "-x", "1", "-d", o, nginx.url("/g1.bin")], None),
                ]
                rows += run_scenario(f"S1ab 1 GiB, defaults against -x 1, {ab_runs} runs{where}", clients,
                                     {"g1.bin": digests["g1.bin"]}, out_base, ab_runs, 1024 * MIB, twins=False)
            if want("S2"):
                urls = [nginx.url(f"/small/{name}") for name in small]
                if not suffix:
                    rows += small_file_floor("S2 durability floor (file work alone)", out_base, len(small), 64 * 1024, 16, args.runs)
                rows += many_files(f"S2 2000×64 KiB{where}", "s2", urls, small, 16, out_base, 2000 * 64 * 1024, relaxed=not suffix)
            if want("S3"):
                urls = [nginx.url(f"/mid/{name}") for name in mid]
                if not suffix:
                    rows += disk_floor("S3 durable write floor: dd 800 MiB conv=fdatasync", out_base, 800, args.runs)
                rows += many_files(f"S3 200×4 MiB{where}", "s3", urls, mid, 8, out_base, 200 * 4 * MIB)
            if want("S6"):
                rows += one_file(f"S6 1 GiB over HTTPS (TLS 1.3){where}", nginx.tls_url("/g1.bin"), "g1.bin", out_base, 1024 * MIB, tls=True)
            if want("S7"):
                urls = [nginx.tls_url(f"/small/{name}") for name in small]
                rows += many_files(f"S7 2000×64 KiB, HTTPS + HTTP/2{where}", "s7", urls, small, 16, out_base, 2000 * 64 * 1024, tls=True)
        if "H256" in scenarios:
            urls = [nginx.url(f"/many/{name}", host=i % 4) for i, name in enumerate(many)]
            rows += many_files("H256 20000×64 KiB, 4 hosts, 256 at once (tmpfs)", "h256", urls, many, 256,
                               f"{tmpfs_base}/out", len(many) * 64 * 1024, per_host=64, keep_runs=False)
        if "B404" in scenarios:
            # Bulk scale: a long list of URLs that 404 at once, so the per-URL cost and the
            # memory per queued URL show, not the disk.
            n = args.bulk_urls
            listing, curl_config = url_files("b404", [nginx.url(f"/missing/m{i}") for i in range(n)])
            clients = [
                ("haul", lambda o: [haul, "get", "-q", "-j", "32", "--per-host", "32", "--retries", "0", "-d", o, "-i", listing], None),
                ("curl --parallel", lambda o: ["curl", "-sS", "-f", "--parallel", "--parallel-max", "32", "--output-dir", o, "-K", curl_config], None),
                ("wget2", lambda o: ["wget2", "-q", "--no-robots", "--tries=1", "--max-threads=32", "-P", o, "-i", listing], None),
                ("aria2c", lambda o: ["aria2c", "-q", "-j32", "-x1", "--max-tries=1", "--file-allocation=none", "-d", o, "-i", listing], None),
            ]
            rows += run_scenario(f"B404 {n} URLs that 404", clients, {}, out, args.runs, 0, unit_files=n, any_exit=True)
        if "Btiny" in scenarios:
            n = args.bulk_files
            rows += small_file_floor(f"Btiny durability floor (file work alone)", out, n, 512, 16, args.runs)
            rows += many_files(f"Btiny {n}×512 B", "btiny", [nginx.url(f"/tiny/{name}") for name in tiny], tiny, 16, out, n * 512, relaxed=True)
        if "Brerun" in scenarios:
            # A rerun of a finished batch must transfer nothing, and quickly: every file is
            # already under its final name.
            n = args.bulk_files
            listing, _ = url_files("brerun", [nginx.url(f"/tiny/{name}") for name in tiny])
            rerun_dir = f"{out}-rerun"
            clean(rerun_dir)
            LEFT_FOR_THE_END.append(rerun_dir)
            command = [haul, "get", "-q", "-j", "16", "--per-host", "16", "-d", rerun_dir, "-i", listing]
            timed(command, rerun_dir)
            verify(rerun_dir, tiny)
            samples = [timed(command, rerun_dir) for _ in range(args.runs)]
            walls = sorted(s[0] for s in samples)
            median = statistics.median(walls)
            rows.append(f"| Brerun {n} files already complete | haul | {median:.2f} | {walls[0]:.2f}–{walls[-1]:.2f} "
                        f"| {n / median:.0f} files/s | {statistics.median(s[1] for s in samples):.2f} | {max(s[2] for s in samples) / 1024:.1f} |")
        if "S4" in scenarios:
            url = nginx.url("/slow/h512.bin")
            expected = {"h512.bin": digests["h512.bin"]}
            clients = [
                ("haul -x 8", lambda o: [haul, "get", "-q", "-x", "8", "-d", o, url], None),
                ("haul (defaults: ramps up to 4)", lambda o: [haul, "get", "-q", "-d", o, url], None),
                ("aria2c -x8 -s8", lambda o: ["aria2c", "-q", "-x8", "-s8", "--file-allocation=none", "-d", o, url], None),
                ("curl (1 connection)", lambda o: ["curl", "-sS", "-o", f"{o}/h512.bin", url], 0),
            ]
            if axel:
                clients.insert(2, ("axel -n 8", lambda o: [axel, "-q", "-n", "8", "-o", f"{o}/h512.bin", url], None))
            rows += run_scenario("S4 512 MiB, 16 MiB/s per connection", clients, expected, out, args.runs, 512 * MIB)
        if "S4u" in scenarios:
            url = nginx.url("/h512.bin")
            expected = {"h512.bin": digests["h512.bin"]}
            clients = [
                ("haul -x 8", lambda o: [haul, "get", "-q", "-x", "8", "-d", o, url], None),
                ("haul -x 1", lambda o: [haul, "get", "-q", "-x", "1", "-d", o, url], None),
                ("aria2c -x8 -s8", lambda o: ["aria2c", "-q", "-x8", "-s8", "--file-allocation=none", "-d", o, url], None),
            ]
            rows += run_scenario("S4u 512 MiB, unthrottled", clients, expected, out, args.runs, 512 * MIB)
        if "S5" in scenarios:
            for name, size in [("g1.bin", 1024), ("g4.bin", 4096)]:
                url = nginx.url(f"/{name}")
                expected = {name: digests[name]}
                # A warm-up run first: the first reader of a 4 GiB file must not be the only
                # one to pay for reading it from disk into nginx's page cache.
                clients = [
                    ("haul", lambda o, u=url: [haul, "get", "-q", "-d", o, u], None),
                    ("curl", lambda o, u=url, n=name: ["curl", "-sS", "-o", f"{o}/{n}", u], None),
                    ("aria2c", lambda o, u=url: ["aria2c", "-q", "--file-allocation=none", "-d", o, u], None),
                ]
                rows += run_scenario(f"S5 RSS {size} MiB", clients, expected, out, 1, size * MIB)
    finally:
        nginx.stop()
        for directory in LEFT_FOR_THE_END:
            shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        if tmpfs_base:
            shutil.rmtree(tmpfs_base, ignore_errors=True)
    print(f"\nhaul comparison, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, median of {args.runs} runs after a warm-up")
    print("| scenario | client | median s | min–max s | rate | CPU s | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print()
    print("\n".join(ratios(rows)))


def disk_floor(title, out, mib, runs):
    """The disk's durable write rate for `mib` MiB: dd with one fdatasync at the end, in the
    same run as the clients (this disk's rate varies minute to minute)."""
    walls = []
    for _ in range(runs):
        clean(out)
        os.sync()
        started = time.perf_counter()
        subprocess.run(["dd", "if=/dev/zero", f"of={out}/floor.bin", "bs=1M", f"count={mib}", "conv=fdatasync"],
                       check=True, capture_output=True)
        walls.append(time.perf_counter() - started)
        clean(out)
    walls.sort()
    median = statistics.median(walls)
    return [f"| {title} | dd | {median:.2f} | {walls[0]:.2f}–{walls[-1]:.2f} | {mib * MIB / median / 1e6:.0f} MB/s | | |"]


def small_file_floor(title, out, files, size, threads, runs):
    """What durability costs for these files without any network (benches/durability_model.py):
    the fastest durable way (fdatasync per file, or one syncfs per batch) is the floor; the
    unsynced time is shown beside it. syncfs_named also makes the names durable (what haul
    promises for a finished file; the other two never sync a directory): never faster than
    syncfs_batch, so the floor stays the fastest of the three."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import durability_model
    results = {"nosync": [], "fdatasync": [], "syncfs_batch": [], "syncfs_named": []}
    for run in range(runs):
        for mode in results:
            directory = f"{out}-floor-{mode}-{run}"
            clean(directory)
            os.sync()
            wall, _ = durability_model.measure(mode, directory, files, size, threads)
            results[mode].append(wall)
    # Removed only when the script ends: deleting this many files now would slow every
    # client that runs next (see run_scenario).
    LEFT_FOR_THE_END.extend(f"{out}-floor-{mode}-{run}" for run in range(runs) for mode in results)
    rows = []
    for mode, walls in results.items():
        walls.sort()
        median = statistics.median(walls)
        label = "no sync (not a floor)" if mode == "nosync" else mode
        rows.append(f"| {title} | {label} | {median:.2f} | {walls[0]:.2f}–{walls[-1]:.2f} | {files / median:.0f} files/s | | |")
    return rows


def ratios(rows):
    """haul's ratio to the fastest peer per scenario, and to the disk's floor where one ran."""
    by_scenario = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if cells[0].startswith("S5"):
            continue  # memory, not speed
        key = cells[0].split()[0] + (" (tmpfs)" if "(tmpfs)" in cells[0] else "")
        by_scenario.setdefault(key, []).append((cells[0], cells[1], float(cells[2])))
    lines = ["| scenario | haul (defaults) s | fastest peer | ratio | floor s | haul / floor |", "| --- | --- | --- | --- | --- | --- |"]
    for scenario, entries in by_scenario.items():
        hauls = [e for e in entries if e[1].startswith("haul") and "(before)" not in e[1]]
        peers = [e for e in entries if not e[1].startswith("haul") and "floor" not in e[0] and "(before)" not in e[1]]
        floors = [e for e in entries if "floor" in e[0] and "not a floor" not in e[1]]
        if not hauls or not peers:
            continue
        haul = next((e for e in hauls if e[1] in ("haul", "haul (defaults)")), hauls[0])
        peer = min(peers, key=lambda e: e[2])
        floor = min((e[2] for e in floors), default=None)
        floor_cells = f"{floor:.2f} | {haul[2] / floor:.2f}×" if floor else " | "
        lines.append(f"| {scenario} | {haul[2]:.2f} | {peer[1]} {peer[2]:.2f} | {haul[2] / peer[2]:.2f}× | {floor_cells} |")
    return lines

if __name__ == "__main__":
    main()
