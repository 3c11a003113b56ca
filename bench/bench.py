#!/usr/bin/env python3
"""NanoBanana's benchmark: its scenarios (see the README), against the release binary, on one machine.

Started by bench/run.sh, which builds the binaries, installs oha and starts a durable throwaway
PostgreSQL (TEST_DATABASE_URL). This script starts the fake Google and the server(s), checks one
generation end to end, runs each scenario with oha, and measures, per scenario: requests/s,
p50/p99/max latency, errors, the server's peak RSS (VmHWM, reset before each scenario) and CPU
time per response (utime+stime from /proc), the gateway overhead p50/p99 (from the server's
`gateway_overhead_seconds` histogram: the upper bound of the bucket holding the quantile), and it
asserts that the succeeded generations written to the database equal oha's count of 200s.

After the scenarios it runs bench/memory.py (peak and after-burst RSS per request size) and adds its
table to the report.

S2-S3 runs S2 with images stored in S3: the s3s-fs server the tests use (nb-storage's example
s3-test-server),
started here on loopback; a sample of the stored objects (and of S2's files on local disk) is
compared byte for byte with the image the fake sends.

Usage: bench.py NANOBANANA FAKE_GOOGLE FLOOR S3_TEST_SERVER [--peer DIR] [--quick]

--peer DIR also runs the Python reference design (the seed's FastAPI service) found in DIR
through the same scenarios; `--peer` alone takes DIR from NB_BENCH_PEER. Nothing here assumes
where that folder is.
Only the Python standard library is used.
"""

import base64
import datetime
import json
import os
import platform
import random
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PASSWORD = "bench password 1"
PROMPT = json.dumps({"prompt": "a banana on the moon"})
B64_JSON_REQUEST = json.dumps({"prompt": "a banana on the moon", "response_format": "b64_json"})
STREAM_REQUEST = json.dumps({"prompt": "a banana on the moon", "stream": True})
# A 4K PNG as the Nano Banana models make it: 10-20 MB.
IMAGE_4K_BYTES = 16_000_000
S3_ACCESS, S3_SECRET, S3_BUCKET = "benchaccess", "benchsecret-0123456789", "bench"


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, token=None, expect=None):
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    if expect is not None and status != expect:
        raise SystemExit(f"{method} {url}: expected {expect}, got {status}: {payload[:300]!r}")
    return status, payload


def wait_for(url, process, name):
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"{name} exited early")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{name} did not come up")


def create_database(admin_url, name):
    subprocess.run(["psql", admin_url, "-qc", f"CREATE DATABASE {name}"], check=True)
    parsed = urllib.parse.urlparse(admin_url)
    return urllib.parse.urlunparse(parsed._replace(path=f"/{name}"))


class Server:
    """One server under test: ours or the peer."""

    def __init__(self, name, command, env, port, count_succeeded, cwd=None):
        self.name, self.port = name, port
        self.base = f"http://127.0.0.1:{port}"
        self.count_succeeded = count_succeeded
        self.log = open(os.path.join(tempfile.gettempdir(), f"nb-bench-{name}.log"), "w")
        self.process = subprocess.Popen(command, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        wait_for(f"{self.base}/healthz", self.process, name)
        self.pids = self.all_pids()

    def all_pids(self):
        """The server and its children (uvicorn's workers)."""
        pids = [self.process.pid]
        children = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        pids += [int(pid) for pid in children.stdout.split()]
        return pids

    def cpu_seconds(self):
        total = 0
        for pid in self.pids:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / CLK_TCK

    def reset_peak_rss(self):
        for pid in self.pids:
            with open(f"/proc/{pid}/clear_refs", "w") as clear:
                clear.write("5")

    def peak_rss_mib(self):
        total = 0
        for pid in self.pids:
            with open(f"/proc/{pid}/status") as status:
                total += int(re.search(r"VmHWM:\s+(\d+) kB", status.read()).group(1))
        return total / 1024

    def overhead_buckets(self):
        """The gateway's overhead histograms (`gateway_*_seconds`) by name: {upper bound: count}."""
        if self.name.startswith("peer"):
            return None
        _, text = http("GET", f"{self.base}/metrics", expect=200)
        histograms = {}
        for line in text.decode().splitlines():
            match = re.match(r'(gateway_\w+)_seconds_bucket\{le="([^"]+)"\} (\d+)', line)
            if match:
                histograms.setdefault(match.group(1), {})[float(match.group(2))] = int(match.group(3))
        return histograms

    def histogram(self, metric):
        """One histogram of /metrics: {upper bound: cumulative count}."""
        _, text = http("GET", f"{self.base}/metrics", expect=200)
        buckets = {}
        for line in text.decode().splitlines():
            match = re.match(re.escape(metric) + r'_bucket\{le="([^"]+)"\} (\d+)', line)
            if match:
                buckets[float(match.group(1))] = int(match.group(2))
        return buckets

    def wait_for_succeeded(self, count, timeout=300):
        """Waits until `count` generations succeeded in all (a queue drained); how long it took."""
        started = time.time()
        while self.count_succeeded() < count:
            if time.time() - started > timeout:
                raise SystemExit(f"{self.name}: the queue did not drain in {timeout} s")
            time.sleep(0.05)
        return time.time() - started

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def quantile_upper_bound(before, after, q):
    """The upper bound of the histogram bucket holding quantile q of the observations between
    the two snapshots."""
    if not after:
        return None
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0) for b in bounds]
    total = counts[-1] if counts else 0
    if total == 0:
        return None
    for bound, cumulative in zip(bounds, counts):
        if cumulative >= q * total:
            return bound
    return float("inf")


def user_and_key(server):
    email = f"bench-{secrets.token_hex(4)}@example.com"
    _, body = http("POST", f"{server.base}/v1/auth/register", {"email": email, "password": PASSWORD})
    if server.name.startswith("peer"):
        _, body = http("POST", f"{server.base}/v1/auth/login", {"email": email, "password": PASSWORD}, expect=200)
    token = json.loads(body)["access_token"]
    _, body = http("POST", f"{server.base}/v1/keys", {"name": "bench"}, token=token, expect=201)
    return json.loads(body)["key"]


def control_fake(fake, latency_ms, image_bytes):
    http("POST", f"{fake}/control", {"latency_ms": latency_ms, "image_bytes": image_bytes}, expect=204)


def check_one_generation(server, key, fake, image_bytes):
    control_fake(fake, 0, image_bytes)
    _, body = http("POST", f"{server.base}/v1/generate", {"prompt": "check"}, token=key, expect=200)
    url = json.loads(body)["url"]
    with urllib.request.urlopen(url, timeout=30) as response:
        image = response.read()
    if not image.startswith(b"\x89PNG") or abs(len(image) - image_bytes) > 512:
        raise SystemExit(f"{server.name}: the stored image is not the provider's ({len(image)} bytes)")
    log(f"{server.name}: one generation end to end OK ({len(image)} bytes at {url[:60]}…)")


def oha(url, connections, key=None, duration=None, requests=None, rate=None, body=PROMPT, headers=()):
    command = ["oha", "--no-tui", "--output-format", "json", "-c", str(connections)]
    for header in headers:
        command += ["-H", header]
    command += ["-z", duration, "-w"] if duration else ["-n", str(requests)]
    if rate:
        command += ["-q", str(rate)]
    if key:
        command += ["-m", "POST", "-H", f"Authorization: Bearer {key}", "-H", "Content-Type: application/json",
                    "-d", body]
    output = subprocess.run(command + [url], capture_output=True, text=True, check=True)
    return json.loads(output.stdout)


def run_scenario(server, name, path, key, connections, duration=None, requests=None, rate=None, body=PROMPT,
                 headers=(), ok_status=200, drained=None):
    """One scenario under oha. `ok_status`: the answer that counts as a success (202 for
    asynchronous jobs); `drained`: called after oha with the number of successes, returns once
    the server has finished their work (the queue of jobs), before usage and CPU are read."""
    generates = path in ("/v1/generate", "/v1/images/generations")
    succeeded_before = server.count_succeeded() if generates else 0
    buckets_before = server.overhead_buckets() if generates else None
    server.reset_peak_rss()
    cpu_before = server.cpu_seconds()
    report = oha(f"{server.base}{path}", connections, key if generates else None, duration, requests, rate, body,
                 headers)
    statuses = {int(code): count for code, count in report["statusCodeDistribution"].items()}
    ok = statuses.get(ok_status, 0)
    drain_seconds = drained(succeeded_before + ok) if drained else None
    cpu = server.cpu_seconds() - cpu_before
    peak = server.peak_rss_mib()
    errors = sum(report["errorDistribution"].values()) + sum(n for code, n in statuses.items() if code != ok_status)
    result = {
        "server": server.name, "scenario": name, "connections": connections,
        "requests_per_s": report["summary"]["requestsPerSec"],
        "p50_ms": report["latencyPercentiles"]["p50"] * 1e3 if report["latencyPercentiles"]["p50"] else None,
        "p99_ms": report["latencyPercentiles"]["p99"] * 1e3 if report["latencyPercentiles"]["p99"] else None,
        "max_ms": (report["summary"]["slowest"] or 0) * 1e3,
        "ok": ok, "errors": errors, "statuses": statuses, "error_kinds": report["errorDistribution"],
        "peak_rss_mib": peak, "cpu_ms_per_response": cpu * 1e3 / max(ok + errors, 1),
    }
    if drain_seconds is not None:
        result["drain_seconds"] = drain_seconds
    if generates:
        buckets_after = server.overhead_buckets()
        in_ms = lambda value: value * 1e3 if value is not None else None
        # The whole overhead, the durable commit in it, and everything else.
        for histogram, field in (("gateway_overhead", "overhead"), ("gateway_commit", "commit"),
                                 ("gateway_overhead_excluding_commit", "rest")):
            before = (buckets_before or {}).get(histogram, {})
            after = (buckets_after or {}).get(histogram, {})
            result[f"{field}_p50_ms"] = in_ms(quantile_upper_bound(before, after, 0.50)) if after else None
            result[f"{field}_p99_ms"] = in_ms(quantile_upper_bound(before, after, 0.99)) if after else None
        recorded = server.count_succeeded() - succeeded_before
        result["recorded"] = recorded
        result["usage_exact"] = recorded == ok
        if recorded != ok:
            log(f"!! {server.name} {name}: {recorded} generations recorded, oha counted {ok} 200s")
    log(f"{server.name} {name}: {result['requests_per_s']:.0f} req/s, p99 {result['p99_ms']:.1f} ms, "
        f"errors {errors}, RSS {peak:.0f} MiB, CPU {result['cpu_ms_per_response']:.3f} ms/response")
    return result


def scenarios(server, key, fake, quick, floor=None, data_dir=None):
    seconds = "5s" if quick else "10s"
    results = []
    control_fake(fake, 0, 2048)
    oha(f"{server.base}/v1/generate", 64, key, duration="2s")  # warm-up
    s1 = run_scenario(server, "S1 hot path", "/v1/generate", key, 64, duration=seconds)
    results.append(s1)
    half = max(int(s1["requests_per_s"] / 2), 1)
    results.append(run_scenario(server, f"S1 at half rate ({half}/s)", "/v1/generate", key, 64, duration=seconds,
                                rate=half))
    # A light load: one request at a time, so the overhead is the gateway's own, not a queue's.
    results.append(run_scenario(server, "S1 light (1 connection)", "/v1/generate", key, 1, duration=seconds))
    if not server.name.startswith("peer"):
        # The OpenAI route streaming its answer (server-sent events), 2 KB images.
        results.append(run_scenario(server, "S-stream (OpenAI route, stream: true)", "/v1/images/generations", key,
                                    64, duration=seconds, body=STREAM_REQUEST))
        results += jobs_scenarios(server, key, quick)
    control_fake(fake, 0, 1_500_000)
    started = time.time()
    results.append(run_scenario(server, "S2 1.5 MB images", "/v1/generate", key, 64, duration=seconds))
    if floor and data_dir:
        results[-1]["verified_sample"] = verify_stored_sample(data_dir, floor["image"], started)
    if not server.name.startswith("peer"):
        # The OpenAI route answering the 1.5 MB image itself, base64 in the JSON.
        results.append(run_scenario(server, "S5 b64_json 1.5 MB (OpenAI route)", "/v1/images/generations", key,
                                    64, duration=seconds, body=B64_JSON_REQUEST))
    if not server.name.startswith("peer") and floor and data_dir:
        results += s4k_scenarios(server, key, fake, quick, floor, data_dir)
    control_fake(fake, 2000, 2048)
    in_flight = 2000 if quick else 10_000
    results.append(run_scenario(server, "S3 2 s upstream", "/v1/generate", key, in_flight, requests=in_flight))
    control_fake(fake, 0, 2048)
    results.append(run_scenario(server, "S4 /healthz floor", "/healthz", None, 64, duration=seconds))
    return results


def jobs_scenarios(server, key, quick):
    """S-jobs: asynchronous generations (`Prefer: respond-async`). A burst of submissions (how
    many a second are accepted; the queue then drains), and a steady rate the workers keep up
    with, where the time from submission to a worker's start (`nanobanana_job_wait_seconds`) is
    the wake-up's, not a backlog's."""
    results = []
    submissions = 1000 if quick else 4000
    results.append(run_scenario(server, f"S-jobs burst ({submissions} submissions)", "/v1/generate", key, 64,
                                requests=submissions, headers=("Prefer: respond-async",), ok_status=202,
                                drained=server.wait_for_succeeded))
    before = server.histogram("nanobanana_job_wait_seconds")
    steady = run_scenario(server, "S-jobs steady (100/s)", "/v1/generate", key, 16, duration="5s" if quick else "10s",
                          rate=100, headers=("Prefer: respond-async",), ok_status=202,
                          drained=server.wait_for_succeeded)
    after = server.histogram("nanobanana_job_wait_seconds")
    steady["pickup_p50_ms"] = (quantile_upper_bound(before, after, 0.50) or 0) * 1e3
    steady["pickup_p99_ms"] = (quantile_upper_bound(before, after, 0.99) or 0) * 1e3
    log(f"S-jobs steady: pickup p50 <= {steady['pickup_p50_ms']:.1f} ms, p99 <= {steady['pickup_p99_ms']:.1f} ms")
    results.append(steady)
    return results


def s4k_scenarios(server, key, fake, quick, floor, data_dir, label="S4K"):
    """S4K: 16 MB PNG answers (a 4K image), at 16 and 64 connections; the stored files are
    compared with the fake's image."""
    results = []
    control_fake(fake, 0, IMAGE_4K_BYTES)
    for connections in (16, 64):
        started = time.time()
        results.append(run_scenario(server, f"{label} 16 MB images", "/v1/generate", key, connections,
                                    duration="5s" if quick else "10s"))
        if data_dir:
            results[-1]["verified_sample"] = verify_stored_sample(data_dir, floor["image_4k"], started)
            remove_images_since(data_dir, started)
    control_fake(fake, 0, 2048)
    return results


def our_server(binary, database_url, fake, data_dir, name, settings=None):
    port = free_port()
    env = dict(os.environ, NB_LISTEN=f"127.0.0.1:{port}", DATABASE_URL=database_url, NB_DATA_DIR=data_dir,
               GOOGLE_API_KEY="bench-key", GOOGLE_GEMINI_BASE_URL=fake, NB_BCRYPT_COST="4",
               NB_GENERATIONS_PER_MINUTE_PER_KEY="4000000000",
               NB_GENERATIONS_PER_MINUTE_PER_ACCOUNT="4000000000", NB_AUTH_ATTEMPTS_PER_MINUTE_PER_IP="1000",
               NB_UPSTREAM_CONCURRENCY="20000", NB_UPSTREAM_QUEUE_TIMEOUT_SECONDS="60",
               NB_DB_POOL_SIZE="32", RUST_LOG="warn", JWT_SECRET=secrets.token_hex(32),
               # The fake speaks h2c (HTTP/2, as HTTPS to Google negotiates) and caps streams per
               # connection at 100 as Google does: the server opens more connections past that.
               GOOGLE_GEMINI_HTTP2_PRIOR_KNOWLEDGE="true")
    env.update(settings or {})
    if database_url.startswith("sqlite"):
        path = database_url[len("sqlite://"):]

        def count():
            with sqlite3.connect(path) as db:
                return db.execute("select count(*) from generations where status = 'succeeded'").fetchone()[0]
    else:
        def count():
            out = subprocess.run(["psql", database_url, "-tAc",
                                  "select count(*) from generations where status = 'succeeded'"],
                                 capture_output=True, text=True, check=True)
            return int(out.stdout.strip())
    return Server(name, [binary], env, port, count)


def peer_server(peer_source, plain_database_url, fake, data_dir):
    database_url = plain_database_url.replace("postgres://", "postgresql+asyncpg://")
    workdir = os.path.join(tempfile.gettempdir(), "nb-bench-peer")
    if not os.path.exists(os.path.join(workdir, ".venv", "bin", "uvicorn")):
        subprocess.run(["rm", "-rf", workdir])
        subprocess.run(["cp", "-r", peer_source, workdir], check=True)
        log("setting up the peer (pip install)…")
        subprocess.run(["bash", "setup.sh"], cwd=workdir, check=True)
    port = free_port()
    env = dict(os.environ, DATABASE_URL=database_url, JWT_SECRET=secrets.token_hex(32),
               GOOGLE_API_KEY="bench-key", GOOGLE_GEMINI_BASE_URL=fake, NB_STORAGE="local",
               NB_DATA_DIR=data_dir, NB_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", PORT=str(port))

    def count():
        out = subprocess.run(["psql", plain_database_url, "-tAc", "select count(*) from generations"],
                             capture_output=True, text=True, check=True)
        return int(out.stdout.strip())
    return Server("peer (FastAPI)", ["bash", "run.sh"], env, port, count, cwd=workdir)


def table(results):
    header = ("| server | scenario | conns | req/s | p50 ms | p99 ms | max ms | errors | peak RSS MiB "
              "| CPU ms/resp | overhead p50/p99 ms | usage exact |")
    lines = [header, "|" + "---|" * 12]
    for r in results:
        if "overhead_p99_ms" not in r:
            overhead = ""
        elif r["overhead_p99_ms"] is None:
            overhead = "n/a"
        else:
            overhead = f"{r['overhead_p50_ms']:.2f} / {r['overhead_p99_ms']:.2f}"
        exact = "" if "usage_exact" not in r else ("yes" if r["usage_exact"] else f"NO ({r['recorded']} vs {r['ok']})")
        lines.append(f"| {r['server']} | {r['scenario']} | {r['connections']} | {r['requests_per_s']:.0f} "
                     f"| {r['p50_ms'] or 0:.2f} | {r['p99_ms'] or 0:.2f} | {r['max_ms']:.1f} | {r['errors']} "
                     f"| {r['peak_rss_mib']:.0f} | {r['cpu_ms_per_response']:.3f} | {overhead} | {exact} |")
    return "\n".join(lines)


def measure_floor(floor_binary, fake, folder, s3_endpoint, image_bytes=1_500_000, rounds=200, s3_rounds=100):
    """The floor of a generation's own work on this machine (bench/src/bin/floor.rs): parse, SIMD
    decode and write of the fake's answer (an `image_bytes` image) in a tight loop, and one small
    write + fsync; and the S3 floor: the same parse and decode, then the S3 adapter's upload to
    the benchmark's S3 server."""
    control_fake(fake, 0, image_bytes)
    answer = os.path.join(folder, "answer.json")
    os.makedirs(folder, exist_ok=True)
    # A model of the built-in catalog: the fake answers 404 for any other, as Google does.
    request = urllib.request.Request(f"{fake}/v1beta/models/gemini-3.1-flash-image:generateContent", data=b"{}",
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response, open(answer, "wb") as out:
        out.write(response.read())
    output = subprocess.run([floor_binary, answer, os.path.join(folder, "files"), str(rounds)],
                            capture_output=True, text=True, check=True)
    floor = json.loads(output.stdout)
    megabytes = image_bytes / 1e6
    log(f"floor: parse {floor['parse_ms']:.3f} + decode {floor['decode_ms']:.3f} + write {floor['write_ms']:.3f} "
        f"= {floor['total_ms']:.3f} ms per {megabytes:g} MB image; fsync {floor['fsync_ms']:.3f} ms")
    output = subprocess.run([floor_binary, answer, os.path.join(folder, "files"), str(s3_rounds), "--s3",
                             s3_endpoint, S3_ACCESS, S3_SECRET, S3_BUCKET], capture_output=True, text=True,
                            check=True)
    floor["s3"] = json.loads(output.stdout)
    log(f"S3 floor: parse + decode + upload {floor['s3']['cpu_ms_per_image']:.3f} ms CPU per {megabytes:g} MB "
        f"image (upload {floor['s3']['upload_ms']:.3f} ms wall)")
    with open(answer) as saved:
        data = json.load(saved)["candidates"][0]["content"]["parts"][0]["inlineData"]["data"]
    floor["image"] = base64.b64decode(data)
    os.remove(answer)
    return floor


def measure_conversions(convert_binary, quick):
    """S-convert (bench/src/bin/convert-floor.rs): 1K and 4K PNG to WebP and JPEG, the
    conversion alone (the floor) and through the server's converter (the blocking pool)."""
    output = subprocess.run([convert_binary, "3" if quick else "7"], capture_output=True, text=True, check=True)
    conversions = json.loads(output.stdout)
    for c in conversions:
        log(f"S-convert {c['size']} PNG -> {c['to']}: {c['converter_ms']:.1f} ms (floor {c['floor_ms']:.1f} ms)")
    return conversions


def verify_stored_sample(folder, expected, since, count=5):
    """A sample of the images stored in `folder` since `since`, compared byte for byte with the
    one the fake sent."""
    stored = [os.path.join(where, name) for where, _, names in os.walk(folder) for name in names
              if name.endswith(".png") and os.sep + "floor" not in where]
    recent = [path for path in stored if os.path.getmtime(path) >= since]
    if not recent:
        raise SystemExit(f"no image was stored under {folder}")
    sample = random.sample(recent, min(count, len(recent)))
    for path in sample:
        with open(path, "rb") as image:
            if image.read() != expected:
                raise SystemExit(f"{path}: the stored image is not the provider's")
    log(f"{len(sample)} of the {len(recent)} images stored are byte for byte the provider's")
    return len(sample)


def remove_images_since(folder, since):
    """Deletes the images stored in `folder` since `since` (16 MB each: gigabytes a scenario)."""
    for where, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(where, name)
            if name.endswith(".png") and os.path.getmtime(path) >= since:
                os.remove(path)


def start_s3_server(binary):
    """The tests' S3 server (s3s-fs, SigV4 checked) on a free loopback port."""
    port = free_port()
    process = subprocess.Popen([binary, f"127.0.0.1:{port}", S3_ACCESS, S3_SECRET, S3_BUCKET],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    endpoint, root = process.stdout.readline().split()
    return process, endpoint, root


def start_redis():
    """A throwaway redis-server on a free loopback port, nothing saved (limits need no
    durability)."""
    port = free_port()
    process = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"redis://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def s1_only(server, key, fake, quick, name="S1 hot path"):
    control_fake(fake, 0, 2048)
    oha(f"{server.base}/v1/generate", 64, key, duration="2s")  # warm-up
    return run_scenario(server, name, "/v1/generate", key, 64, duration="5s" if quick else "10s")


def main():
    binary, fake_binary, floor_binary, s3_binary = sys.argv[1:5]
    options = sys.argv[5:]
    quick = "--quick" in options
    peer_source = None
    if "--peer" in options:
        at = options.index("--peer")
        given = options[at + 1] if at + 1 < len(options) and not options[at + 1].startswith("--") else None
        peer_source = given or os.environ.get("NB_BENCH_PEER")
        if not peer_source or not os.path.isdir(peer_source):
            sys.exit("bench: --peer needs the reference design's folder: --peer DIR or NB_BENCH_PEER=DIR")
    with_peer = peer_source is not None
    admin = os.environ["TEST_DATABASE_URL"]
    work = tempfile.mkdtemp(prefix="nb-bench-")
    fake_port = free_port()
    fake = f"http://127.0.0.1:{fake_port}"
    fake_process = subprocess.Popen([fake_binary, f"127.0.0.1:{fake_port}"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
    redis_process, redis_url = start_redis()
    s3_process, s3_endpoint, s3_root = start_s3_server(s3_binary)
    results, servers = [], []
    try:
        time.sleep(0.5)
        floor = measure_floor(floor_binary, fake, os.path.join(work, "postgres", "floor"), s3_endpoint)
        floor["k4"] = measure_floor(floor_binary, fake, os.path.join(work, "postgres", "floor"), s3_endpoint,
                                    IMAGE_4K_BYTES, rounds=10, s3_rounds=10)
        floor["image_4k"] = floor["k4"]["image"]
        conversions = measure_conversions(os.path.join(os.path.dirname(floor_binary), "convert-floor"), quick)
        # The floors wrote hundreds of MB: flush them now, or the kernel writes them back (30 s
        # later) while the first server is measured, and every durable commit waits behind it.
        os.sync()
        postgres = create_database(admin, "bench_ours")
        # (name, database, settings, data folder, every scenario or S1 only). The default on
        # PostgreSQL counts per-minute limits in it (shared by instances); the next two rows
        # show what that costs against Redis and against memory (per instance).
        runs = [("nanobanana (PostgreSQL)", postgres, {}, "postgres", True),
                ("nanobanana (PostgreSQL, limits in Redis)", postgres, {"NB_REDIS_URL": redis_url}, "redis", False),
                ("nanobanana (PostgreSQL, limits in memory)", postgres, {"NB_RATE_LIMITS": "memory"}, "memory",
                 False),
                ("nanobanana (SQLite)", f"sqlite://{work}/bench.db", {}, "sqlite", False)]
        # The first server started in a run measured ~40 % slower for its whole life, whichever
        # configuration it was (swapping the first two moved the slowness with the order:
        # docs/benchmarks.md); a discarded server goes first.
        warm_up = our_server(binary, postgres, fake, os.path.join(work, "warm-up"), "warm-up (discarded)")
        servers.append(warm_up)
        control_fake(fake, 0, 2048)
        oha(f"{warm_up.base}/v1/generate", 64, user_and_key(warm_up), duration="5s")
        warm_up.stop()
        for name, database, settings, folder, every_scenario in runs:
            os.sync()  # the previous server's images, likewise
            server = our_server(binary, database, fake, os.path.join(work, folder), name, settings)
            servers.append(server)
            key = user_and_key(server)
            check_one_generation(server, key, fake, 2048)
            if every_scenario:
                results += scenarios(server, key, fake, quick, floor, os.path.join(work, folder))
            else:
                results.append(s1_only(server, key, fake, quick))
            server.stop()
        # S2 with the images in S3 (the benchmark's s3s-fs server).
        s3_settings = {"NB_STORAGE": "s3", "R2_ENDPOINT": s3_endpoint, "R2_ACCESS_KEY": S3_ACCESS,
                       "R2_SECRET_KEY": S3_SECRET, "R2_BUCKET": S3_BUCKET, "R2_REGION": "auto"}
        server = our_server(binary, postgres, fake, os.path.join(work, "s3"), "nanobanana (PostgreSQL, S3 storage)",
                            s3_settings)
        servers.append(server)
        key = user_and_key(server)
        control_fake(fake, 0, 1_500_000)
        oha(f"{server.base}/v1/generate", 64, key, duration="2s")  # warm-up
        started = time.time()
        results.append(run_scenario(server, "S2-S3 1.5 MB images in S3", "/v1/generate", key, 64,
                                    duration="5s" if quick else "10s"))
        results[-1]["verified_sample"] = verify_stored_sample(os.path.join(s3_root, S3_BUCKET), floor["image"],
                                                              started)
        results += s4k_scenarios(server, key, fake, quick, floor, os.path.join(s3_root, S3_BUCKET), "S4K-S3")
        server.stop()
        if with_peer:
            server = peer_server(peer_source, create_database(admin, "bench_peer"), fake, os.path.join(work, "peer"))
            servers.append(server)
            key = user_and_key(server)
            results += scenarios(server, key, fake, quick)
            server.stop()
    finally:
        for server in servers:
            if server.process.poll() is None:
                server.stop()
        fake_process.terminate()
        redis_process.terminate()
        s3_process.terminate()
        s3_process.wait()
        # Thousands of 1.5 MB images: gigabytes of disk.
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(s3_root, ignore_errors=True)

    # Memory per request (bench/memory.py): its own server on SQLite, once the load above is over.
    memory_table = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "memory.py"), binary, fake_binary]
                                  + (["--quick"] if quick else []), capture_output=True, text=True,
                                  check=True).stdout
    report = [f"# Benchmark {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
              "", f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}.",
              "Load generator (oha), PostgreSQL (durable: fsync on), fake Google and server on the same machine.",
              "", table(results), ""]
    def short(scenario):
        first = scenario.split(" ")[0]
        return first + (" half" if "half" in scenario else " light" if "light" in scenario else "")
    by = {(r["server"], short(r["scenario"])): r for r in results if not r["scenario"].startswith(("S4K", "S-jobs"))}
    report.append(f"Floor on this machine (bench/src/bin/floor.rs, medians): parse {floor['parse_ms']:.3f} ms + "
                  f"SIMD decode {floor['decode_ms']:.3f} ms + write {floor['write_ms']:.3f} ms = "
                  f"{floor['total_ms']:.3f} ms for the 1.5 MB answer; one small write + fsync "
                  f"{floor['fsync_ms']:.3f} ms.")
    report.append(f"S3 floor on this machine (the same parse and decode, then the S3 adapter's upload to the "
                  f"benchmark's S3 server, one at a time): {floor['s3']['cpu_ms_per_image']:.3f} ms CPU per image.")
    s2 = by.get(("nanobanana (PostgreSQL)", "S2"))
    if s2:
        report.append(f"S2 server CPU per generation {s2['cpu_ms_per_response']:.3f} ms = "
                      f"{s2['cpu_ms_per_response'] / floor['total_ms']:.2f}x the floor (target <= 1.3x).")
    s5 = by.get(("nanobanana (PostgreSQL)", "S5"))
    if s2 and s5:
        report.append(f"S5 (the OpenAI route answering the image as b64_json): {s5['requests_per_s']:.0f} req/s, "
                      f"CPU {s5['cpu_ms_per_response']:.3f} ms per generation, S2's + "
                      f"{s5['cpu_ms_per_response'] - s2['cpu_ms_per_response']:.3f} ms for encoding and sending 2 MB.")
    s2_s3 = by.get(("nanobanana (PostgreSQL, S3 storage)", "S2-S3"))
    if s2_s3:
        report.append(f"S2-S3 server CPU per generation {s2_s3['cpu_ms_per_response']:.3f} ms = "
                      f"{s2_s3['cpu_ms_per_response'] / floor['s3']['cpu_ms_per_image']:.2f}x the S3 floor "
                      f"(target <= 1.3x); stored objects checked byte for byte: {s2_s3['verified_sample']}.")
    k4 = floor["k4"]
    report.append(f"Floor of a 16 MB image (the same binary): parse {k4['parse_ms']:.2f} + decode "
                  f"{k4['decode_ms']:.2f} + write {k4['write_ms']:.2f} = {k4['total_ms']:.2f} ms; to S3 "
                  f"{k4['s3']['cpu_ms_per_image']:.2f} ms CPU.")
    for r in results:
        if r["scenario"].startswith("S4K"):
            in_s3 = r["scenario"].startswith("S4K-S3")
            floor_ms = k4["s3"]["cpu_ms_per_image"] if in_s3 else k4["total_ms"]
            report.append(f"{r['scenario']} at {r['connections']} connections ({r['server']}): "
                          f"{r['requests_per_s']:.1f} req/s, CPU per generation {r['cpu_ms_per_response']:.2f} ms = "
                          f"{r['cpu_ms_per_response'] / floor_ms:.2f}x the floor (target <= 1.5x), peak RSS "
                          f"{r['peak_rss_mib']:.0f} MiB (target <= 200 at 64 connections); stored files checked "
                          f"byte for byte: {r.get('verified_sample', 0)}.")
    light = by.get(("nanobanana (PostgreSQL)", "S1 light"))
    if light and light.get("rest_p99_ms") is not None:
        ms = lambda value: f"{value:.2f}" if value is not None else "n/a"
        report.append(f"S1 light (one connection), the gateway's own overhead (bucket upper bounds, ms): "
                      f"everything but the commit p50 {ms(light['rest_p50_ms'])} / p99 {ms(light['rest_p99_ms'])} "
                      f"(target p99 < 1 ms); the durable commit p50 {ms(light['commit_p50_ms'])} / p99 "
                      f"{ms(light['commit_p99_ms'])} (one fsync: {floor['fsync_ms']:.3f} ms).")
    stream = by.get(("nanobanana (PostgreSQL)", "S-stream"))
    ours = by.get(("nanobanana (PostgreSQL)", "S1"))
    if stream and ours:
        report.append(f"S-stream (the OpenAI route, stream: true, 2 KB images): {stream['requests_per_s']:.0f} req/s, "
                      f"CPU {stream['cpu_ms_per_response']:.3f} ms per generation (S1: {ours['cpu_ms_per_response']:.3f}).")
    for r in results:
        if r["scenario"].startswith("S-jobs"):
            line = (f"{r['scenario']}: {r['requests_per_s']:.0f} submissions/s accepted (202), the queue drained "
                    f"{r['drain_seconds']:.1f} s after the last, usage exact: {'yes' if r.get('usage_exact') else 'NO'}")
            if "pickup_p99_ms" in r:
                line += (f"; from submission to a worker's start p50 <= {r['pickup_p50_ms']:.1f} ms, "
                         f"p99 <= {r['pickup_p99_ms']:.1f} ms (histogram bucket bounds)")
            report.append(line + ".")
    report += ["", "S-convert (bench/src/bin/convert-floor.rs): a model's PNG converted as `output_format` asks, "
               "median ms per image; the floor is the conversion alone on one thread, the measured path the "
               "server's converter (the blocking pool, one conversion per core).", "",
               "| size | PNG MB | to | out MB | floor ms | converter ms | ratio |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in conversions:
        report.append(f"| {c['size']} | {c['png_bytes'] / 1e6:.1f} | {c['to']} | {c['out_bytes'] / 1e6:.1f} | "
                      f"{c['floor_ms']:.1f} | {c['converter_ms']:.1f} | {c['converter_ms'] / c['floor_ms']:.2f} |")
    report.append("")
    peer_s2 = by.get(("peer (FastAPI)", "S2"))
    if s2 and peer_s2:
        report.append(f"S2 ours/peer: throughput x{s2['requests_per_s'] / peer_s2['requests_per_s']:.1f} "
                      f"(target >= 4x), peak RSS {s2['peak_rss_mib']:.0f} MiB (target <= 100)")
    s3 = by.get(("nanobanana (PostgreSQL)", "S3"))
    if s3:
        report.append(f"S3 ({s3['connections']} in flight, 2 s upstream): p99 {s3['p99_ms'] / 1e3:.2f} s "
                      f"(target <= 2.5 s), peak RSS {s3['peak_rss_mib']:.0f} MiB (target < 300)")
    half = by.get(("nanobanana (PostgreSQL)", "S1 half"))
    if half and half.get("commit_p99_ms") is not None:
        ms = lambda value: f"{value:.2f}" if value is not None else "n/a"
        report.append(f"S1 at half rate, gateway overhead split (bucket upper bounds, ms): durable commit p50 "
                      f"{ms(half['commit_p50_ms'])} / p99 {ms(half['commit_p99_ms'])} (one fsync of this disk: "
                      f"{floor['fsync_ms']:.3f} ms); everything else p50 {ms(half['rest_p50_ms'])} / p99 "
                      f"{ms(half['rest_p99_ms'])} (target p99 < 1 ms).")
    ours = by.get(("nanobanana (PostgreSQL)", "S1"))
    floor = by.get(("nanobanana (PostgreSQL)", "S4"))
    if ours and floor:
        report.append(f"S1/S4 (share of the HTTP floor a full generation keeps): "
                      f"{ours['requests_per_s'] / floor['requests_per_s']:.2f}")
    for limits in ("Redis", "memory"):
        other = by.get((f"nanobanana (PostgreSQL, limits in {limits})", "S1"))
        if ours and other:
            report.append(f"S1, per-minute limits in PostgreSQL vs in {limits}: "
                          f"{ours['requests_per_s']:.0f} vs {other['requests_per_s']:.0f} req/s, "
                          f"CPU {ours['cpu_ms_per_response']:.3f} vs {other['cpu_ms_per_response']:.3f} ms/response, "
                          f"p99 {ours['p99_ms']:.2f} vs {other['p99_ms']:.2f} ms")
    peer = by.get(("peer (FastAPI)", "S1"))
    if ours and peer:
        report.append(f"S1 ours/peer: throughput x{ours['requests_per_s'] / peer['requests_per_s']:.1f}, "
                      f"p99 1/{peer['p99_ms'] / ours['p99_ms']:.1f}, "
                      f"CPU per response 1/{peer['cpu_ms_per_response'] / ours['cpu_ms_per_response']:.1f}")
    report += ["", "## Memory per request (bench/memory.py)", "",
               "Peak and after-burst RSS of the release server on SQLite, N requests with large bodies at once, "
               "Google answering in 5 s; 503s are the body budget (NB_MAX_BODY_BYTES_IN_FLIGHT) refusing "
               "before the body is read.", "", memory_table]
    text = "\n".join(report) + "\n"
    print(text)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H%M")
    with open(os.path.join(ROOT, "bench", "results", f"{stamp}.md"), "w") as out:
        out.write(text)
    with open(os.path.join(ROOT, "bench", "results", f"{stamp}.json"), "w") as out:
        json.dump(results, out, indent=1)
    if not all(r.get("usage_exact", True) for r in results):
        raise SystemExit("usage was not counted exactly")


if __name__ == "__main__":
    main()
