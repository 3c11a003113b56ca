#!/usr/bin/env python3
"""Memory per request: the server's resident memory while large requests are in flight, and
after them.

Started by bench/run.sh (or by hand): `memory.py NANOBANANA FAKE_GOOGLE [--quick]`. It starts
the fake Google with a set latency and the release server on SQLite and local disk, then for
each scenario sends N requests at once and samples the server's RSS every 20 ms from the first
byte sent until every answer came back (the peak), then every 100 ms for 10 s (what it gives
back). Scenarios:

- M1: 16 OpenAI edits at once (`POST /v1/images/edits`, two 7 MiB PNGs of noise, n=4), Google
  answering in 5 s: the outside probe's case. Target: peak <= 400 MiB, back under 150 MiB
  within 10 s.
- M2: 16 native generations at once with the same two images in base64 (`POST /v1/generate`).
- M3/M4/M5: 16 edits at once with one image of 1, 4 and 10 MiB: the peak per request size.
- M6: 64 edits at once against a budget of 256 MiB of bodies in flight: what is refused
  (503 `server_busy`, before the body is read) and what the peak stays under.

Prints a Markdown table; only the standard library is used.
"""

import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib

PASSWORD = "bench password 1"


def log(message):
    print(f"[memory] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port, method, path, body=None, headers=None, timeout=120):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, payload


def noise_png(size_bytes):
    """A real PNG of about `size_bytes` that does not compress (random RGB noise)."""
    side = int((size_bytes / 3) ** 0.5)
    row = side * 3
    raw = b"".join(b"\x00" + os.urandom(row) for _ in range(side))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b"")


def multipart(fields, files):
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode())
    for name, filename, data in files:
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                     f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Rss:
    """Samples a process's resident memory in a thread."""

    def __init__(self, pid):
        self.pid = pid

    def now_mib(self):
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def peak_during(self, work):
        peak = [self.now_mib()]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], self.now_mib())
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            result = work()
        finally:
            done.set()
            sampler.join()
        return peak[0], result

    def after(self, seconds):
        """RSS every 100 ms for `seconds`: the last value and the lowest."""
        values = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            values.append(self.now_mib())
            time.sleep(0.1)
        return values[-1], min(values)


def at_once(port, count, method, path, body, headers):
    statuses = [None] * count
    barrier = threading.Barrier(count)

    def one(index):
        barrier.wait()
        try:
            statuses[index] = call(port, method, path, body, headers, timeout=300)[0]
        except Exception as error:  # noqa: BLE001 - a failed request is a result here
            statuses[index] = f"error: {error.__class__.__name__}"

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return counts


def main():
    binary, fake_binary = sys.argv[1], sys.argv[2]
    quick = "--quick" in sys.argv
    work = tempfile.mkdtemp(prefix="nb-memory-")
    fake_port, port = free_port(), free_port()
    fake = subprocess.Popen([fake_binary, f"127.0.0.1:{fake_port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    env = dict(os.environ, NB_LISTEN=f"127.0.0.1:{port}", NB_DATA_DIR=os.path.join(work, "data"),
               GOOGLE_API_KEY="bench-key", GOOGLE_GEMINI_BASE_URL=f"http://127.0.0.1:{fake_port}",
               GOOGLE_GEMINI_HTTP2_PRIOR_KNOWLEDGE="true", NB_BCRYPT_COST="4",
               NB_GENERATIONS_PER_MINUTE_PER_KEY="100000", NB_GENERATIONS_PER_MINUTE_PER_ACCOUNT="100000",
               NB_CLIENT_BODY_DEADLINE_SECONDS="300", RUST_LOG="warn",
               # The scenarios measure memory with the probe's 7 MiB and 10 MiB images, which
               # are over Google's 7 MB inline limit (the default since the model catalog):
               # raised here so that they are served, not refused with 413.
               NB_MAX_INPUT_IMAGE_BYTES=str(11 * 1024 * 1024))
    env.pop("DATABASE_URL", None)
    env.pop("NB_CONFIG", None)
    server = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        for _ in range(300):
            try:
                call(port, "GET", "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        call(fake_port, "POST", "/control", json.dumps({"latency_ms": 5000, "image_bytes": 200_000}),
             {"Content-Type": "application/json"})
        _, body = call(port, "POST", "/v1/auth/register", json.dumps({"email": "bench@example.com", "password": PASSWORD}),
                       {"Content-Type": "application/json"})
        token = json.loads(body)["access_token"]
        _, body = call(port, "POST", "/v1/keys", json.dumps({"name": "memory"}),
                       {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        key = json.loads(body)["key"]
        auth = {"Authorization": f"Bearer {key}"}
        rss = Rss(server.pid)
        seven = [noise_png(7 * 1024 * 1024 - 4096), noise_png(7 * 1024 * 1024 - 4096)]
        scenarios = []
        body, content_type = multipart({"prompt": "combine them", "n": "4"},
                                       [("image[]", "a.png", seven[0]), ("image[]", "b.png", seven[1])])
        scenarios.append(("M1 16 edits, 2 x 7 MiB, n=4", 16, "/v1/images/edits", body, content_type))
        import base64
        native = json.dumps({"prompt": "combine them", "images": [base64.b64encode(i).decode() for i in seven]}).encode()
        scenarios.append(("M2 16 native, 2 x 7 MiB base64", 16, "/v1/generate", native, "application/json"))
        if not quick:
            for mib in (1, 4, 10):
                image = noise_png(mib * 1024 * 1024 - 4096)
                body, content_type = multipart({"prompt": "edit it"}, [("image", "a.png", image)])
                scenarios.append((f"M{2 + (1, 4, 10).index(mib) + 1} 16 edits, 1 x {mib} MiB", 16, "/v1/images/edits",
                                  body, content_type))
            body, content_type = multipart({"prompt": "combine them", "n": "4"},
                                           [("image[]", "a.png", seven[0]), ("image[]", "b.png", seven[1])])
            scenarios.append(("M6 64 edits, 2 x 7 MiB, n=4", 64, "/v1/images/edits", body, content_type))
        for name, count, path, body, content_type in scenarios:
            before = rss.now_mib()
            headers = dict(auth, **{"Content-Type": content_type})
            started = time.monotonic()
            peak, statuses = rss.peak_during(lambda: at_once(port, count, "POST", path, body, headers))
            took = time.monotonic() - started
            after, lowest = rss.after(10)
            per_request = (peak - before) / count
            rows.append((name, len(body) / 1024 / 1024, count, statuses, before, peak, per_request, after, took))
            log(f"{name}: {statuses} peak {peak:.0f} MiB (before {before:.0f}), after 10 s {after:.0f} MiB")
    finally:
        server.terminate()
        fake.terminate()
        server.wait()
        fake.wait()
        subprocess.run(["rm", "-rf", work])
    print("| scenario | body MiB | at once | answers | RSS before | peak RSS | peak per request | RSS 10 s after | took s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, size, count, statuses, before, peak, per_request, after, took in rows:
        answers = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items(), key=str))
        print(f"| {name} | {size:.1f} | {count} | {answers} | {before:.0f} | {peak:.0f} | {per_request:.1f} | "
              f"{after:.0f} | {took:.1f} |")


if __name__ == "__main__":
    main()
