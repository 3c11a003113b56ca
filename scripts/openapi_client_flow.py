#!/usr/bin/env python3
"""The main flow through a client generated from the server's own OpenAPI document.

Fetches `<base>/openapi.json`, generates a Python client from it with openapi-python-client
(the way API users make clients), and runs register, log in, who-am-I, create and list keys,
generate, usage and fetching the image through that client, with undocumented statuses
raising. A slip in the document (a route, parameter or body described wrongly) breaks the
generated client and fails this script.

Usage: openapi_client_flow.py <base URL> <expected image, base64>
Needs openapi-python-client and its dependencies (scripts/test-requirements.txt).
"""

import base64
import os
import subprocess
import sys
import tempfile
import urllib.request
import uuid

# The generator reads JSON, octet-stream and text bodies; images are bytes like octet-stream.
GENERATOR_CONFIG = """content_type_overrides:
  image/png: application/octet-stream
  image/jpeg: application/octet-stream
  image/webp: application/octet-stream
"""


def generate_client(base, workdir):
    document = os.path.join(workdir, "openapi.json")
    with urllib.request.urlopen(f"{base}/openapi.json", timeout=30) as response, open(document, "wb") as out:
        out.write(response.read())
    config = os.path.join(workdir, "config.yaml")
    with open(config, "w") as out:
        out.write(GENERATOR_CONFIG)
    tool = os.path.join(os.path.dirname(sys.executable), "openapi-python-client")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    generated = subprocess.run(
        [tool, "generate", "--path", document, "--meta", "none", "--config", config,
         "--output-path", os.path.join(workdir, "nbclient")],
        env=env, capture_output=True, text=True, check=False)
    if generated.returncode != 0:
        raise AssertionError(f"openapi-python-client failed:\n{generated.stdout}\n{generated.stderr}")
    sys.path.insert(0, workdir)


def main():
    base, expected_image = sys.argv[1], base64.b64decode(sys.argv[2])
    workdir = tempfile.mkdtemp(prefix="nb-openapi-client-")
    generate_client(base, workdir)

    from nbclient import AuthenticatedClient, Client
    from nbclient.api.accounts import login, me, register
    from nbclient.api.generation import generate, serve, usage
    from nbclient.api.keys import create, list_
    from nbclient.models import (CreateKeyRequest, ErrorBody, GenerateRequest, LoginRequest,
                                 RegisterRequest)

    anonymous = Client(base_url=base, raise_on_unexpected_status=True)
    email = f"client-{uuid.uuid4().hex[:8]}@example.com"
    password = "generated client password"
    registered = register.sync(client=anonymous, body=RegisterRequest(email=email, password=password))
    assert not isinstance(registered, ErrorBody), registered
    logged_in = login.sync(client=anonymous, body=LoginRequest(email=email, password=password))
    assert not isinstance(logged_in, ErrorBody), logged_in
    account = AuthenticatedClient(base_url=base, token=logged_in.access_token, raise_on_unexpected_status=True)
    assert me.sync(client=account).email == email

    created = create.sync(client=account, body=CreateKeyRequest(name="generated client"))
    assert not isinstance(created, ErrorBody), created
    listed = list_.sync(client=account)
    assert [key.id for key in listed.keys] == [created.id], listed

    api = AuthenticatedClient(base_url=base, token=created.key, raise_on_unexpected_status=True)
    generated = generate.sync(client=api, body=GenerateRequest(prompt="a banana", size="1792x1024"))
    assert not isinstance(generated, ErrorBody), generated
    assert generated.size == "1792x1024" and generated.mime_type == "image/png", generated
    refused = generate.sync(client=api, body=GenerateRequest(prompt=""))
    assert isinstance(refused, ErrorBody) and refused.error.field == "prompt", refused

    counted = usage.sync(client=account, days=7)
    assert [day.count for day in counted.usage] == [1], counted
    assert usage.sync(client=account).usage[0].api_key_id == created.id

    tail = generated.url.split("/images/", 1)[1]
    image = serve.sync_detailed(client=anonymous, tail=tail)
    assert image.status_code == 200, image
    assert image.content == expected_image, f"the image read through the client differs: {image.status_code} {image.content[:200]!r}"
    print(f"openapi client: generated from {base}/openapi.json; 9 calls through it as documented")


if __name__ == "__main__":
    main()
