#!/usr/bin/env python3
"""A local cluster: PostgreSQL, the S3 test server, a fake Google, three `nanobanana`
instances and HAProxy in front of them (health checks on /readyz).

    scripts/cluster.sh            # start it, print the addresses, Ctrl-C stops everything
    scripts/cluster.py --check    # start it, run the cluster checks, stop (CI)

Binaries come from target/debug (scripts/cluster.sh builds them). PostgreSQL: a database on
TEST_DATABASE_URL's server when it is set, else a throwaway cluster (initdb/pg_ctl).
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join(ROOT, "target", "debug")
PASSWORD = "cluster password " + secrets.token_hex(4)
S3_ACCESS, S3_SECRET, BUCKET = "cluster-access", "cluster-secret-" + secrets.token_hex(8), "nb-cluster"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method, url, body=None, token=None, timeout=30):
    """(status, parsed JSON body or None); a connection failure raises."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None


def wait_for(url, what, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if http("GET", url, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} did not become ready")


def wait_for_port(port, what, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{what} did not start")


class Cluster:
    def __init__(self, workdir, instances=3, redis=False):
        self.workdir = workdir
        self.processes = []
        self.jwt_secret = secrets.token_hex(32)
        self.database_url, self.cleanup_database = self.start_postgres()
        self.redis_url = self.start_redis() if redis else None
        self.s3_endpoint = self.start_s3()
        self.google = self.start_google()
        self.instance_ports = [free_port() for _ in range(instances)]
        self.instances = [self.start_instance(n) for n in range(instances)]
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.haproxy = self.start_haproxy()
        for port in self.instance_ports:
            wait_for(f"http://127.0.0.1:{port}/readyz", f"instance on {port}")
        wait_for(f"{self.base}/readyz", "HAProxy")

    def spawn(self, name, args, env=None):
        log = open(os.path.join(self.workdir, f"{name}.log"), "w")
        process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def start_postgres(self):
        admin = os.environ.get("TEST_DATABASE_URL")
        if admin:
            name = "nb_cluster_" + secrets.token_hex(6)
            subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True)
            base = admin.rsplit("/", 1)[0]
            return f"{base}/{name}", lambda: subprocess.run(
                ["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)
        port = free_port()
        data = os.path.join(self.workdir, "pg")
        bins = sorted(d for d in os.listdir("/usr/lib/postgresql"))[-1]
        bin_dir = f"/usr/lib/postgresql/{bins}/bin"
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres")
        subprocess.run(as_postgres + [f"{bin_dir}/initdb", "-D", data, "-U", "postgres", "-A", "trust",
                                      "--no-sync"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(as_postgres + [f"{bin_dir}/pg_ctl", "-D", data, "-l", f"{data}.log", "-w", "-o",
                                      f"-c listen_addresses=127.0.0.1 -p {port} -k {self.workdir} -c fsync=off",
                                      "start"], check=True, stdout=subprocess.DEVNULL)
        return f"postgres://postgres@127.0.0.1:{port}/postgres", lambda: subprocess.run(
            as_postgres + [f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
            check=False, stdout=subprocess.DEVNULL)

    def start_redis(self):
        port = free_port()
        self.spawn("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no"])
        wait_for_port(port, "redis-server")
        return f"redis://127.0.0.1:{port}"

    def start_s3(self):
        port = free_port()
        process = subprocess.Popen([os.path.join(TARGET, "examples", "s3-test-server"), f"127.0.0.1:{port}",
                                    S3_ACCESS, S3_SECRET, BUCKET], stdout=subprocess.PIPE, text=True)
        self.processes.append(process)
        return process.stdout.readline().split()[0]

    def start_google(self):
        port = free_port()
        self.spawn("google", [os.path.join(TARGET, "fake-google"), f"127.0.0.1:{port}"])
        wait_for_port(port, "the fake Google")
        return f"http://127.0.0.1:{port}"

    def instance_env(self, n):
        return dict(os.environ, NB_LISTEN=f"127.0.0.1:{self.instance_ports[n]}",
                    NB_DATA_DIR=os.path.join(self.workdir, f"instance-{n}"),
                    DATABASE_URL=self.database_url, JWT_SECRET=self.jwt_secret,
                    GOOGLE_API_KEY="cluster-google-key", GOOGLE_GEMINI_BASE_URL=self.google,
                    NB_STORAGE="s3", R2_ENDPOINT=self.s3_endpoint, R2_ACCESS_KEY=S3_ACCESS,
                    R2_SECRET_KEY=S3_SECRET, R2_BUCKET=BUCKET, NB_BCRYPT_COST="4",
                    NB_SHUTDOWN_DRAIN_SECONDS="2", NB_KEY_CACHE_TTL_SECONDS="300",
                    NB_GENERATIONS_PER_MINUTE_PER_KEY="100000",
                    NB_GENERATIONS_PER_MINUTE_PER_ACCOUNT="100000",
                    NB_AUTH_ATTEMPTS_PER_MINUTE_PER_IP="1000", RUST_LOG="warn",
                    **({"NB_REDIS_URL": self.redis_url} if self.redis_url else {}))

    def start_instance(self, n):
        return self.spawn(f"instance-{n}-{time.time_ns()}", [os.path.join(TARGET, "nanobanana")],
                          env=self.instance_env(n))

    def restart_instance(self, n):
        """SIGTERM (the instance drains, then stops), then the same instance again."""
        process = self.instances[n]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, f"instance {n} did not stop cleanly"
        self.instances[n] = self.start_instance(n)
        wait_for(f"http://127.0.0.1:{self.instance_ports[n]}/readyz", f"instance {n}")

    def start_haproxy(self):
        servers = "\n".join(f"    server n{n} 127.0.0.1:{port} check"
                            for n, port in enumerate(self.instance_ports))
        config = f"""global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch
    retry-on conn-failure empty-response
frontend api
    bind 127.0.0.1:{self.port}
    default_backend nanobanana
backend nanobanana
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 300ms fall 1 rise 2
{servers}
"""
        path = os.path.join(self.workdir, "haproxy.cfg")
        with open(path, "w") as file:
            file.write(config)
        return self.spawn("haproxy", ["haproxy", "-f", path, "-db"])

    def stop(self):
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.cleanup_database()


def check_shared_limit(cluster):
    token = http("POST", f"{cluster.base}/v1/auth/register",
                 {"email": f"limit-{secrets.token_hex(3)}@example.com", "password": PASSWORD})[1]["access_token"]
    key = http("POST", f"{cluster.base}/v1/keys", {"limits": {"per_minute": 30}}, token=token)[1]["key"]
    results = []
    lock = threading.Lock()

    def one():
        status, _ = http("POST", f"{cluster.base}/v1/generate", {"prompt": "a banana"}, token=key)
        with lock:
            results.append(status)

    threads = [threading.Thread(target=one) for _ in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (results.count(200), results.count(429)) == (30, 70), sorted(results)
    return token


def check_revocation(cluster, token):
    created = http("POST", f"{cluster.base}/v1/keys", {"name": "revoked"}, token=token)[1]
    key = created["key"]
    instances = [f"http://127.0.0.1:{port}" for port in cluster.instance_ports]
    for base in instances:  # every instance caches the key
        assert http("POST", f"{base}/v1/generate", {"prompt": "a banana"}, token=key)[0] == 200
    revoked_at = time.monotonic()
    assert http("DELETE", f"{instances[0]}/v1/keys/{created['id']}", token=token)[0] == 204
    for base in instances[1:]:
        while True:
            status, body = http("POST", f"{base}/v1/generate", {"prompt": "a banana"}, token=key)
            if status == 401:
                break
            assert status == 200, (status, body)
            assert time.monotonic() - revoked_at < 1.0, "the revocation took over a second"
            time.sleep(0.01)
    return time.monotonic() - revoked_at


def check_rolling_restart(cluster, token):
    key = http("POST", f"{cluster.base}/v1/keys", {"name": "load"}, token=token)[1]["key"]
    stop = threading.Event()
    outcomes = []
    lock = threading.Lock()

    def load():
        while not stop.is_set():
            try:
                status, body = http("POST", f"{cluster.base}/v1/generate", {"prompt": "a banana"}, token=key)
                outcome = status if status == 200 else (status, body)
            except OSError as error:
                outcome = repr(error)
            with lock:
                outcomes.append(outcome)

    workers = [threading.Thread(target=load) for _ in range(6)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5)
        for n in range(len(cluster.instances)):
            cluster.restart_instance(n)
            time.sleep(1.0)  # HAProxy sees it up (rise 2 x 300 ms)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    failures = [outcome for outcome in outcomes if outcome != 200]
    assert outcomes and not failures, f"{len(failures)} of {len(outcomes)} failed: {failures[:5]}"
    return len(outcomes)


def main():
    check = "--check" in sys.argv
    redis = "--redis" in sys.argv
    workdir = tempfile.mkdtemp(prefix="nb-cluster-")
    os.chmod(workdir, 0o755)
    cluster = Cluster(workdir, redis=redis)
    shared_in = "Redis" if redis else "PostgreSQL"
    try:
        if not check:
            print(f"load balancer: {cluster.base} (HAProxy; instances on ports "
                  f"{', '.join(map(str, cluster.instance_ports))}; limits and key changes in "
                  f"{shared_in}); logs in {workdir}; Ctrl-C stops")
            signal.sigwait([signal.SIGINT, signal.SIGTERM])
            return
        token = check_shared_limit(cluster)
        print(f"cluster ({shared_in}): a per-minute limit of 30 over three instances let exactly 30 of 100 "
              "through")
        took = check_revocation(cluster, token)
        print(f"cluster ({shared_in}): a revocation through one instance reached the others in "
              f"{took * 1000:.0f} ms")
        served = check_rolling_restart(cluster, token)
        print(f"cluster ({shared_in}): a rolling restart of the three instances under load lost none of "
              f"{served} requests")
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
