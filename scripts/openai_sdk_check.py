#!/usr/bin/env python3
"""The OpenAI-compatible routes, driven by the official `openai` Python package (and the
official Node package when Node is on the machine), against the real `nanobanana` binary.

Starts a fake of Google's `:generateContent` in this process (recording what it receives),
then the server on SQLite and, when TEST_DATABASE_URL is set, on a fresh PostgreSQL database,
and checks through the SDK: generations as URLs and as base64 (the bytes the fake returned),
n=3 counted as 3, every size's aspect ratio as Google received it, every SDK parameter
accepted, each error raised as the SDK's own exception class, edits with one and with two
images (Google receives them in order, byte for byte), a mask, models.list/retrieve, and the
SDK's own retries with an Idempotency-Key ending in one image.

Usage: openai_sdk_check.py <nanobanana binary>
Needs the packages of scripts/test-requirements.txt (run by scripts/e2e.sh with
NB_TEST_PYTHON). Node: `openai` from npm is installed into target/node-sdk when `node` and
`npm` are on the PATH.
"""

import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai

GOOGLE_KEY = "AIzaSy-sdk-" + secrets.token_hex(8)
PASSWORD = "sdk password " + secrets.token_hex(4)
NODE_SDK_VERSION = "6.49.0"  # the newest major that runs on Node 20
# A real 2x2 PNG, and a tiny JPEG header: the fake's answer and an input of another type.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4f4IBiBggFAA1zgcdmk6h0gAAAABJRU5ErkJggg=="
)
JPEG = bytes([0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10]) + b"JFIF\0\1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeGoogle(BaseHTTPRequestHandler):
    """Gemini's `:generateContent`: an image, unless the prompt asks for a failure."""

    received = []
    lock = threading.Lock()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with FakeGoogle.lock:
            FakeGoogle.received.append((self.path, body))
        prompt = body["contents"][0]["parts"][0]["text"]
        if "refuse me" in prompt:
            return self.answer(200, {"promptFeedback": {"blockReason": "SAFETY"}})
        if "slow me" in prompt:
            time.sleep(1.0)
        if "break me" in prompt:
            return self.answer(500, {"error": {"code": 500, "status": "INTERNAL", "message": "boom"}})
        image = base64.b64encode(PNG).decode()
        self.answer(200, {"candidates": [{"content": {"role": "model", "parts": [
            {"inlineData": {"mimeType": "image/png", "data": image}}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 10, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}],
                              "candidatesTokenCount": 1120, "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1120}],
                              "thoughtsTokenCount": 30, "totalTokenCount": 1160}})

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


def http(method, url, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"null")


def received_since(mark):
    with FakeGoogle.lock:
        return [body for _, body in FakeGoogle.received[mark:]]


def mark():
    with FakeGoogle.lock:
        return len(FakeGoogle.received)


def raises(exception_class, call, code=None, param=None):
    try:
        call()
    except exception_class as error:
        body = error.body or {}
        if code is not None:
            assert body.get("code") == code, (code, body)
        if param is not None:
            assert body.get("param") == param, (param, body)
        return error
    raise AssertionError(f"expected {exception_class.__name__}")


class Server:
    """The real binary on one database, and an account on it."""

    def __init__(self, binary, name, database_url, workdir, google_url):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(workdir, f"{name}.log")
        env = dict(os.environ, NB_LISTEN=f"127.0.0.1:{self.port}",
                   NB_DATA_DIR=os.path.join(workdir, name), DATABASE_URL=database_url,
                   NB_BCRYPT_COST="4", GOOGLE_API_KEY=GOOGLE_KEY,
                   GOOGLE_GEMINI_BASE_URL=google_url, NB_UPSTREAM_MAX_RETRIES="0",
                   NB_GENERATIONS_PER_MINUTE_PER_KEY="30", RUST_LOG="warn")
        env.pop("JWT_SECRET", None)
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen([binary], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited:\n{open(self.log_path).read()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.1)
        email = f"{name}-{secrets.token_hex(3)}@example.com"
        self.token = http("POST", f"{self.base}/v1/auth/register",
                          {"email": email, "password": PASSWORD})["access_token"]

    def new_key(self):
        return http("POST", f"{self.base}/v1/keys", {"name": "sdk"}, token=self.token)["key"]

    def client(self, key=None):
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=key or self.new_key(), max_retries=0)

    def usage(self):
        return sum(row["count"] for row in http("GET", f"{self.base}/v1/usage", token=self.token)["usage"])

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def check_generations(server):
    client = server.client()
    before = server.usage()
    by_url = client.images.generate(prompt="a banana", model="gpt-image-1")
    assert by_url.created > 1_700_000_000 and len(by_url.data) == 1, by_url
    with urllib.request.urlopen(by_url.data[0].url, timeout=30) as response:
        assert response.read() == PNG, "the image at the URL differs from the provider's"
    by_b64 = client.images.generate(prompt="a banana", response_format="b64_json")
    assert base64.b64decode(by_b64.data[0].b64_json) == PNG
    assert by_b64.output_format == "png" and by_b64.size == "2x2", by_b64
    three = client.images.generate(prompt="three bananas", n=3)
    assert len(three.data) == 3 and len({image.url for image in three.data}) == 3
    assert server.usage() == before + 5, "n=3 was not counted as 3"


def check_sizes(server):
    client = server.client()
    sizes = {"256x256": "1:1", "512x512": "1:1", "1024x1024": "1:1", "1536x1024": "3:2",
             "1024x1536": "2:3", "1792x1024": "16:9", "1024x1792": "9:16"}
    start = mark()
    for size in sizes:
        client.images.generate(prompt="a banana", size=size)
    ratios = [body["generationConfig"]["imageConfig"]["aspectRatio"] for body in received_since(start)]
    assert ratios == list(sizes.values()), ratios
    start = mark()
    client.images.generate(prompt="a banana", size="auto")
    assert "imageConfig" not in received_since(start)[0]["generationConfig"]


def check_every_parameter(server):
    client = server.client()
    response = client.images.generate(
        prompt="a banana", model="dall-e-3", n=1, size="1024x1024", quality="hd",
        response_format="url", style="vivid", output_format="png", output_compression=80,
        background="auto", moderation="low", user="user-42", safety_identifier="s-1",
        stream=False, partial_images=1, complexity="high")
    assert len(response.data) == 1
    edited = client.images.edit(
        image=("a.png", PNG, "image/png"), prompt="a hat", n=1, size="1024x1024",
        quality="high", response_format="b64_json", output_format="png", background="auto",
        input_fidelity="high", user="user-42", output_compression=90)
    assert base64.b64decode(edited.data[0].b64_json) == PNG


def check_errors(server):
    client = server.client()
    raises(openai.BadRequestError, lambda: client.images.generate(prompt="x", size="1000x1000"),
           code="validation_failed", param="size")
    raises(openai.BadRequestError, lambda: client.images.generate(prompt="x", n=11), param="n")
    raises(openai.BadRequestError, lambda: client.images.generate(prompt="refuse me"),
           code="content_policy_violation")
    bad_key = openai.OpenAI(base_url=f"{server.base}/v1", api_key="nb_live_" + "0" * 32, max_retries=0)
    raises(openai.AuthenticationError, lambda: bad_key.images.generate(prompt="x"), code="invalid_api_key")
    raises(openai.NotFoundError, lambda: client.models.retrieve("no-such-model"), code="model_not_found")
    raises(openai.InternalServerError, lambda: client.images.generate(prompt="break me"),
           code="upstream_failed")
    limited = server.client()
    error = None
    for _ in range(40):
        try:
            limited.images.generate(prompt="x")
        except openai.RateLimitError as refused:
            error = refused
            break
    assert error is not None, "the rate limit was never reached"
    assert error.body["code"] == "rate_limited" and error.response.headers.get("retry-after")


def check_streaming_usage_and_sizes(server):
    """stream=True as the SDK's users write it: typed events, one per image, usage on each and
    on every answer; a custom 4K size reaching Google as 16:9 at 4K; an error after the stream
    started raised by the SDK."""
    client = server.client()
    before = server.usage()
    events = list(client.images.generate(prompt="a banana", stream=True))
    assert [event.type for event in events] == ["image_generation.completed"], events
    completed = events[0]
    assert base64.b64decode(completed.b64_json) == PNG
    assert completed.usage.output_tokens == 1120 and completed.usage.input_tokens == 10, completed.usage
    assert completed.usage.input_tokens_details.text_tokens == 10
    assert completed.output_format == "png" and completed.background == "opaque", completed
    two = list(client.images.generate(prompt="two bananas", n=2, stream=True, partial_images=2))
    assert [event.type for event in two] == ["image_generation.completed"] * 2, two
    assert server.usage() == before + 3, "streamed images are counted"
    edit = list(client.images.edit(image=("a.png", PNG, "image/png"), prompt="a hat", stream=True))
    assert [event.type for event in edit] == ["image_edit.completed"], edit
    answer = client.images.generate(prompt="a banana", n=2)
    assert answer.usage.output_tokens == 2 * 1120 and answer.usage.total_tokens == 2 * 1160, answer.usage
    assert answer.usage.output_tokens_details.image_tokens == 2 * 1120, answer.usage
    webp = client.images.generate(prompt="a banana", output_format="webp", output_compression=70,
                                  response_format="b64_json")
    data = base64.b64decode(webp.data[0].b64_json)
    assert webp.output_format == "webp" and data[:4] == b"RIFF" and data[8:12] == b"WEBP", webp.output_format
    start = mark()
    big = client.images.generate(prompt="a banana", size="3840x2160", quality="auto")
    assert big.quality == "high", big
    sent = received_since(start)[0]["generationConfig"]["imageConfig"]
    assert sent == {"aspectRatio": "16:9", "imageSize": "4K"}, sent
    try:
        list(client.images.generate(prompt="refuse me", stream=True))
        raise AssertionError("a refusal after the stream started was not raised")
    except openai.APIError as error:
        assert "blocked" in str(error) or "refused" in str(error), error


def check_edits(server):
    client = server.client()
    start = mark()
    client.images.edit(image=("a.png", PNG, "image/png"), prompt="add a hat")
    client.images.edit(image=[("a.png", PNG, "image/png"), ("b.jpg", JPEG, "image/jpeg")],
                       prompt="combine them")
    client.images.edit(image=("a.png", PNG, "image/png"), mask=("m.png", PNG, "image/png"),
                       prompt="only the sky")
    one, two, masked = received_since(start)
    url_safe = lambda data: base64.urlsafe_b64encode(data).decode()
    parts = lambda body: body["contents"][0]["parts"]
    assert parts(one)[0]["text"].startswith("add a hat")
    assert parts(one)[1] == {"inlineData": {"data": url_safe(PNG), "mime_type": "image/png"}}
    assert [part["inlineData"]["data"] for part in parts(two)[1:]] == [url_safe(PNG), url_safe(JPEG)]
    assert parts(two)[2]["inlineData"]["mime_type"] == "image/jpeg"
    assert len(parts(masked)) == 3 and "mask" in parts(masked)[0]["text"]
    raises(openai.BadRequestError, lambda: client.images.edit(
        image=("a.png", b"<html></html>", "image/png"), prompt="x"), param="image")
    raises(openai.BadRequestError, lambda: client.images.edit(
        image=("a.png", PNG, "image/png"), prompt="x", model="imagen-4.0-generate-001"), param="model")


def check_models(server):
    client = server.client()
    ids = [model.id for model in client.models.list()]
    assert ids[:2] == ["gemini-3.1-flash-image", "imagen-4.0-generate-001"], ids
    assert "gpt-image-2" in ids and "nano-banana-2" in ids, ids
    assert client.models.retrieve("gpt-image-2").id == "gpt-image-2"
    assert client.models.retrieve("gemini-3.1-flash-image").id == "gemini-3.1-flash-image"


def check_node_sdk(server):
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise SystemExit("openai sdk: the Node SDK check needs node and npm on the PATH")
    prefix = os.path.join(ROOT, "target", "node-sdk")
    if not os.path.exists(os.path.join(prefix, "node_modules", "openai", "package.json")):
        os.makedirs(prefix, exist_ok=True)
        subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", prefix,
                        f"openai@{NODE_SDK_VERSION}"], check=True, timeout=600)
    start = mark()
    env = dict(os.environ, NB_BASE_URL=f"{server.base}/v1", NB_API_KEY=server.new_key(),
               NB_PNG=base64.b64encode(PNG).decode(), NB_JPEG=base64.b64encode(JPEG).decode())
    # ES modules resolve packages from the script's own folder: run a copy beside them.
    script = os.path.join(prefix, "openai_node_check.mjs")
    shutil.copy(os.path.join(ROOT, "scripts", "openai_node_check.mjs"), script)
    subprocess.run([node, script], env=env, check=True, timeout=120, cwd=prefix)
    generated, edited, _streamed, streamed_edit = received_since(start)
    assert edited["contents"][0]["parts"][1]["inlineData"]["data"] == base64.urlsafe_b64encode(PNG).decode()
    assert edited["contents"][0]["parts"][2]["inlineData"]["mime_type"] == "image/jpeg"
    assert len(streamed_edit["contents"][0]["parts"]) == 2
    print("openai sdk: the Node SDK generated and edited with two images, and streamed both")


def check_quotas(server):
    """A day quota counts each of n images; over it the SDK raises at once, without retrying
    (its default is two retries), and an expired key is an AuthenticationError."""
    key = http("POST", f"{server.base}/v1/keys", {"name": "quota", "limits": {"per_day": 3}},
               token=server.token)["key"]
    sent = []
    counting = httpx.Client(event_hooks={"request": [lambda request: sent.append(request.url)]})
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key=key, http_client=counting)
    start = mark()
    made = client.images.generate(prompt="a quota", n=2)
    assert len(made.data) == 2
    error = raises(openai.RateLimitError, lambda: client.images.generate(prompt="a quota", n=2),
                   code="quota_exceeded")
    assert error.body["type"] == "insufficient_quota", error.body
    assert int(error.response.headers["retry-after"]) > 0
    assert error.response.headers["x-quota-remaining"] == "1"
    assert len(sent) == 2, f"the SDK sent {len(sent)} requests: it retried a spent quota"
    one = client.images.generate(prompt="a quota", n=1)
    assert len(one.data) == 1
    assert len(received_since(start)) == 3, "Google was called past the quota"
    created = http("POST", f"{server.base}/v1/keys", {"name": "rolled"}, token=server.token)
    http("POST", f"{server.base}/v1/keys/{created['id']}/roll", {"grace_seconds": 0},
         token=server.token)
    expired = openai.OpenAI(base_url=f"{server.base}/v1", api_key=created["key"], max_retries=0)
    raises(openai.AuthenticationError, lambda: expired.images.generate(prompt="x"),
           code="key_expired")


def check_budgets(server):
    """What images cost, and a day budget, through the SDK: each answer says what it cost
    (x-nb-cost-usd: the fake's usage is 10 prompt, 1120 image and 30 thinking tokens, so
    $0.067295 an image, above the $0.0672 estimate); the budget lets the first request through
    on its estimate and then, spent (by the real cost, past it: the documented bound), the SDK
    raises RateLimitError at once (type insufficient_quota), without retrying or calling
    Google; a dry run (x-nb-dry-run) estimates without calling Google."""
    key = http("POST", f"{server.base}/v1/keys",
               {"name": "budget", "limits": {"budget_usd_per_day": "0.1344"}}, token=server.token)["key"]
    sent = []
    counting = httpx.Client(event_hooks={"request": [lambda request: sent.append(request.url)]})
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key=key, http_client=counting)
    start = mark()
    response = client.images.with_raw_response.generate(prompt="a budget", n=2)
    assert len(response.parse().data) == 2
    assert response.headers["x-nb-cost-usd"] == "0.134590", dict(response.headers)
    assert response.headers["x-budget-limit"] == "0.134400", dict(response.headers)
    error = raises(openai.RateLimitError, lambda: client.images.generate(prompt="a budget"),
                   code="budget_exceeded")
    assert error.body["type"] == "insufficient_quota", error.body
    assert error.response.headers["x-budget-remaining"] == "0.000000"
    assert int(error.response.headers["retry-after"]) > 0
    assert len(sent) == 2, f"the SDK sent {len(sent)} requests: it retried a spent budget"
    assert len(received_since(start)) == 2, "Google was called past the budget"
    fresh = openai.OpenAI(base_url=f"{server.base}/v1", api_key=server.new_key())
    dry = fresh.images.with_raw_response.generate(prompt="a dry run", n=3,
                                                  extra_headers={"x-nb-dry-run": "true"})
    estimate = dry.http_response.json()
    assert estimate["dry_run"] is True and estimate["images"] == 3, estimate
    assert estimate["estimated_cost_usd"] == "0.201600", estimate
    assert len(received_since(start)) == 2, "a dry run called Google"


def check_retries(server):
    """The SDK's own retries with an Idempotency-Key: an attempt that times out, then its
    repeats (a 409 while the first still runs, which the SDK retries after Retry-After), end
    in one image, one Google call and one count."""
    key = server.new_key()
    sent = []
    counting = httpx.Client(event_hooks={"request": [lambda request: sent.append(
        request.headers.get("idempotency-key"))]})
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key=key, http_client=counting,
                           timeout=0.3, max_retries=4)
    before, start = server.usage(), mark()
    order = "order-" + secrets.token_hex(4)
    response = client.images.with_raw_response.generate(
        prompt="slow me, a banana", extra_headers={"Idempotency-Key": order})
    image = response.parse()
    assert len(image.data) == 1 and image.data[0].url, image
    assert response.headers.get("idempotent-replayed") == "true", dict(response.headers)
    assert len(sent) >= 2 and set(sent) == {order}, sent
    assert len(received_since(start)) == 1, "the retries reached Google"
    assert server.usage() == before + 1
    # The same key for another request is the SDK's BadRequestError, not retried.
    raises(openai.BadRequestError, lambda: client.images.generate(
        prompt="another", extra_headers={"Idempotency-Key": order}), code="idempotency_key_reused")


CHECKS = [check_generations, check_sizes, check_every_parameter, check_errors, check_edits,
          check_streaming_usage_and_sizes, check_models, check_quotas, check_budgets, check_retries,
          check_node_sdk]


def main():
    binary = sys.argv[1]
    workdir = tempfile.mkdtemp(prefix="nb-openai-sdk-")
    google = ThreadingHTTPServer(("127.0.0.1", 0), FakeGoogle)
    threading.Thread(target=google.serve_forever, daemon=True).start()
    google_url = f"http://127.0.0.1:{google.server_address[1]}"
    os.environ["NB_IMAGE_MODELS"] = "gemini-3.1-flash-image,imagen-4.0-generate-001"
    databases = [("sqlite", f"sqlite://{workdir}/sdk.db", None)]
    admin = os.environ.get("TEST_DATABASE_URL")
    if admin:
        name = "nb_sdk_" + secrets.token_hex(6)
        subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True)
        parsed = urllib.parse.urlparse(admin)
        databases.append(("postgres", urllib.parse.urlunparse(parsed._replace(path=f"/{name}")), name))
    passed, failed = 0, []
    try:
        for backend, url, _ in databases:
            server = Server(binary, backend, url, workdir, google_url)
            try:
                for check in CHECKS:
                    if check is check_node_sdk and backend != "sqlite":
                        continue
                    try:
                        check(server)
                        passed += 1
                    except Exception:  # noqa: BLE001 - every failure is reported, then counted
                        traceback.print_exc()
                        failed.append(f"{backend}: {check.__name__}")
            finally:
                server.stop()
    finally:
        google.shutdown()
        for _, _, name in databases:
            if name:
                subprocess.run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
                               check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"openai sdk {openai.__version__}: {passed} passed, {len(failed)} failed"
          + (f" ({', '.join(failed)})" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
