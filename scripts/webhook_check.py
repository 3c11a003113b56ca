#!/usr/bin/env python3
"""Webhooks against the real `nanobanana` binary, verified with the official `standardwebhooks`
package from PyPI, as a receiver written in Python would.

Starts a receiver in this process and the server on SQLite (test-mode keys: no Google), then:
an asynchronous generation (`Prefer: respond-async, wait=N`) whose `generation.succeeded`
event the library verifies (and refuses with another secret), a rotation after which an event
verifies with the old secret and with the new one, and a receiver failing once whose event
arrives again under the same `webhook-id`.

Usage: webhook_check.py <nanobanana binary>
Needs the packages of scripts/test-requirements.txt (run by scripts/e2e.sh with NB_TEST_PYTHON).
"""

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PASSWORD = "webhook password " + secrets.token_hex(4)


class Receiver(BaseHTTPRequestHandler):
    """Records every event; answers 500 while `failures` is above zero."""

    received = []
    failures = 0
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with Receiver.lock:
            Receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            failing = Receiver.failures > 0
            Receiver.failures -= 1
        self.send_response(500 if failing else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, token=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    sent = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    sent.update(headers or {})
    request = urllib.request.Request(url, data=data, headers=sent, method=method)
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, json.loads(response.read() or b"null")


def events_when(count, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with Receiver.lock:
            if len(Receiver.received) >= count:
                return list(Receiver.received)
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} events arrived: {Receiver.received}")


def main(binary):
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    workdir = tempfile.mkdtemp(prefix="nb-webhooks-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, NB_LISTEN=f"127.0.0.1:{port}", NB_DATA_DIR=workdir,
               NB_BCRYPT_COST="4", NB_WEBHOOK_ALLOW_HTTP="true",
               NB_WEBHOOK_ALLOW_PRIVATE_TARGETS="true", NB_WEBHOOK_RETRY_SCHEDULE="1,1",
               RUST_LOG="warn")
    for name in ("DATABASE_URL", "JWT_SECRET", "NB_ENCRYPTION_KEY", "GOOGLE_API_KEY"):
        env.pop(name, None)
    log_path = os.path.join(workdir, "server.log")
    with open(log_path, "w") as log:
        server = subprocess.Popen([binary], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            if server.poll() is not None:
                raise AssertionError(f"the server exited:\n{open(log_path).read()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert time.time() < deadline, "the server did not start"
                time.sleep(0.1)
        _, account = http("POST", f"{base}/v1/auth/register",
                          {"email": "hooks@example.com", "password": PASSWORD})
        token = account["access_token"]
        _, created_key = http("POST", f"{base}/v1/keys", {"name": "hooks", "mode": "test"}, token=token)
        key = created_key["key"]
        status, endpoint = http("POST", f"{base}/v1/webhooks", {"url": hook}, token=token)
        assert status == 201 and endpoint["secret"].startswith("whsec_"), endpoint
        secret = endpoint["secret"]

        # A job, waited for: its event verifies with the library, and not with another secret.
        status, generation = http("POST", f"{base}/v1/generate", {"prompt": "a banana"}, token=key,
                                  headers={"Prefer": "respond-async, wait=20"})
        assert status == 200 and generation["status"] == "succeeded", generation
        headers, body = events_when(1)[0]
        event = Webhook(secret).verify(body, headers)
        assert event["type"] == "generation.succeeded", event
        assert event["data"]["id"] == generation["id"], event
        try:
            Webhook("whsec_" + "A" * 43 + "=").verify(body, headers)
            raise AssertionError("a forged secret verified")
        except WebhookVerificationError:
            pass

        # Rotated: the next event verifies with the old secret and with the new one.
        _, rotated = http("POST", f"{base}/v1/webhooks/{endpoint['id']}/rotate", token=token)
        status, second = http("POST", f"{base}/v1/generate", {"prompt": "another"}, token=key)
        assert status == 200, second
        headers, body = events_when(2)[1]
        for known in (secret, rotated["secret"]):
            assert Webhook(known).verify(body, headers)["data"]["id"] == second["id"]

        # A receiver failing once gets the event again: same webhook-id, same body.
        with Receiver.lock:
            Receiver.failures = 1
        status, third = http("POST", f"{base}/v1/generate", {"prompt": "a third"}, token=key)
        assert status == 200, third
        (first_headers, first_body), (again_headers, again_body) = events_when(4)[2:4]
        assert first_headers["webhook-id"] == again_headers["webhook-id"]
        assert first_body == again_body
        assert Webhook(rotated["secret"]).verify(again_body, again_headers)["data"]["id"] == third["id"]
        _, deliveries = http("GET", f"{base}/v1/webhooks/{endpoint['id']}/deliveries", token=token)
        assert [d["status_code"] for d in deliveries["deliveries"][:2]] == [204, 500], deliveries
        print("webhooks: events verified with the standardwebhooks package (PyPI)")
    finally:
        server.terminate()
        server.wait(timeout=30)
        receiver.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
