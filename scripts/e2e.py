#!/usr/bin/env python3
"""The main flow against the real `nanobanana` binary.

Starts a local fake of Google's `:generateContent` endpoint (in this process), and for each
setup below the real server (and, for S3, a real S3 protocol server that checks SigV4):
register, log in, create a key, generate with it, fetch the returned URL and compare the bytes
with the ones the fake provider returned. The server logs at TRACE, and the log is searched for
every secret of the flow. On the first setup, a client generated from the server's own
OpenAPI document runs the flow too (scripts/openapi_client_flow.py), when NB_TEST_PYTHON names
a Python with openapi-python-client (scripts/test.sh sets it up).

Setups: SQLite + local disk; PostgreSQL (when TEST_DATABASE_URL is set) or SQLite + S3.
Usage: scripts/e2e.py <nanobanana binary> <s3-test-server binary>
Only the Python standard library is used here. Exits non-zero when any setup fails; the
databases and folders it made are removed at the end.
"""

import base64
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GOOGLE_KEY = "AIzaSy-e2e-" + secrets.token_hex(8)
S3_ACCESS = "e2e-access"
S3_SECRET = "e2e-secret-" + secrets.token_hex(8)
BUCKET = "nanobanana-e2e"
PASSWORD = "e2e password " + secrets.token_hex(4)
# The 2x2 PNG of the captured Gemini response.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4f4IBiBggFAA1zgcdmk6h0gAAAABJRU5ErkJggg=="
)


class FakeGoogle(BaseHTTPRequestHandler):
    """Answers `POST /v1beta/models/<model>:generateContent` like Gemini does."""

    requests = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeGoogle.requests.append((self.path, body))
        if self.headers.get("x-goog-api-key") != GOOGLE_KEY:
            return self.answer(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "API key not valid.",
                                               "details": [{"reason": "API_KEY_INVALID"}]}})
        if not re.fullmatch(r"/v1beta/models/[\w.-]+:generateContent", self.path):
            return self.answer(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": "no such model"}})
        image = base64.b64encode(PNG).decode()
        self.answer(200, {"candidates": [{"content": {"role": "model", "parts": [
            {"inlineData": {"mimeType": "image/png", "data": image}}]}, "finishReason": "STOP", "index": 0}]})

    def answer(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method, url, body=None, token=None, expect=200):
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, payload, content_type = response.status, response.read(), response.headers.get("Content-Type")
    except urllib.error.HTTPError as error:
        status, payload, content_type = error.code, error.read(), error.headers.get("Content-Type")
    if status != expect:
        raise AssertionError(f"{method} {url}: expected {expect}, got {status}: {payload[:500]!r}")
    return payload, content_type


def wait_until_listening(port, process, log_path):
    deadline = time.time() + 60
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited early:\n{open(log_path).read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the server did not start listening in 60 s")


def run_generated_client_flow(base):
    python = os.environ.get("NB_TEST_PYTHON")
    if not python:
        raise SystemExit("e2e: NB_TEST_PYTHON is not set: run this through scripts/test.sh, which "
                         "installs the Python test tools and sets it")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openapi_client_flow.py")
    subprocess.run([python, script, base, base64.b64encode(PNG).decode()], check=True, timeout=300)


def run_flow(name, server_binary, env_extra, workdir, google_url, with_generated_client=False):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = os.path.join(workdir, f"{name}.log")
    env = dict(os.environ, NB_LISTEN=f"127.0.0.1:{port}", NB_DATA_DIR=os.path.join(workdir, name),
               NB_BCRYPT_COST="4", GOOGLE_API_KEY=GOOGLE_KEY, GOOGLE_GEMINI_BASE_URL=google_url,
               RUST_LOG="trace", **env_extra)
    env.pop("JWT_SECRET", None)
    with open(log_path, "w") as log:
        server = subprocess.Popen([server_binary], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_listening(port, server, log_path)
        email = f"{name}@example.com"
        registered = json.loads(call("POST", f"{base}/v1/auth/register", {"email": email, "password": PASSWORD}, expect=201)[0])
        token = json.loads(call("POST", f"{base}/v1/auth/login", {"email": email, "password": PASSWORD})[0])["access_token"]
        created = json.loads(call("POST", f"{base}/v1/keys", {"name": "e2e"}, token=token, expect=201)[0])
        api_key = created["key"]
        assert re.fullmatch(r"nb_live_[0-9a-f]{32}", api_key), api_key
        generated = json.loads(call("POST", f"{base}/v1/generate", {"prompt": "a banana", "size": "1792x1024"}, token=api_key)[0])
        image, content_type = call("GET", generated["url"])
        assert image == PNG, "the stored image differs from the provider's"
        assert content_type == "image/png", content_type
        usage = json.loads(call("GET", f"{base}/v1/usage", token=token)[0])["usage"]
        assert [row["count"] for row in usage] == [1], usage
        call("POST", f"{base}/v1/generate", {"prompt": "x"}, token=token, expect=401)
        print(f"e2e {name}: registered, logged in, created a key, generated {generated['id']}, "
              f"fetched {len(image)} identical bytes from {generated['url'][:60]}…")
        if with_generated_client:
            run_generated_client_flow(base)
    finally:
        server.terminate()
        server.wait(timeout=30)
    log = open(log_path).read()
    assert "request completed" in log, "the server logged nothing"
    for what, secret in [("password", PASSWORD), ("access token", token), ("API key", api_key),
                         ("Google key", GOOGLE_KEY), ("S3 secret", S3_SECRET),
                         ("JWT secret", open(os.path.join(workdir, name, "jwt_secret")).read().strip())]:
        assert secret not in log, f"the {what} appears in the {name} server log"
    return registered


def main():
    server_binary, s3_binary = sys.argv[1], sys.argv[2]
    workdir = tempfile.mkdtemp(prefix="nb-e2e-")
    google = ThreadingHTTPServer(("127.0.0.1", 0), FakeGoogle)
    threading.Thread(target=google.serve_forever, daemon=True).start()
    google_url = f"http://127.0.0.1:{google.server_address[1]}"
    admin = os.environ.get("TEST_DATABASE_URL")
    databases = []

    def local_flow():
        run_flow("local", server_binary, {"DATABASE_URL": f"sqlite://{workdir}/local.db"}, workdir,
                 google_url, with_generated_client=True)

    def s3_flow():
        s3_port = free_port()
        s3 = subprocess.Popen([s3_binary, f"127.0.0.1:{s3_port}", S3_ACCESS, S3_SECRET, BUCKET],
                              stdout=subprocess.PIPE, text=True)
        try:
            endpoint = s3.stdout.readline().split()[0]
            database = f"sqlite://{workdir}/s3.db"
            if admin:
                name = "nb_e2e_" + secrets.token_hex(6)
                subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True)
                databases.append(name)
                parsed = urllib.parse.urlparse(admin)
                database = urllib.parse.urlunparse(parsed._replace(path=f"/{name}"))
            run_flow("s3", server_binary, {
                "DATABASE_URL": database, "NB_STORAGE": "r2", "R2_ENDPOINT": endpoint,
                "R2_ACCESS_KEY": S3_ACCESS, "R2_SECRET_KEY": S3_SECRET, "R2_BUCKET": BUCKET,
            }, workdir, google_url)
        finally:
            s3.terminate()
            s3.wait(timeout=30)

    def what_google_received():
        assert FakeGoogle.requests, "Google was never called"
        assert all(path.endswith(":generateContent") for path, _ in FakeGoogle.requests)
        sent = FakeGoogle.requests[0][1]
        expected = {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "16:9"}}
        assert sent["generationConfig"] == expected, sent

    passed, failed = [], []
    try:
        for check in [local_flow, s3_flow, what_google_received]:
            try:
                check()
                passed.append(check.__name__)
            except Exception:  # noqa: BLE001 - every failure is reported, then counted
                traceback.print_exc()
                failed.append(check.__name__)
    finally:
        google.shutdown()
        for name in databases:
            subprocess.run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
                           check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"e2e: {len(passed)} passed, {len(failed)} failed" + (f" ({', '.join(failed)})" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
