"""`make run`: the local broker, an embedded PostgreSQL with both databases migrated, both
services with their relays and consumers; prints the URLs and a dev API key. Ctrl-C stops all
it started. Data lives in ./var, so a second run keeps the first one's (the broker keeps
nothing). CRM_DATABASE_URL / CEM_DATABASE_URL point a service at another server instead."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from cxkit.demo import dev_port
from cxkit.dev_broker import DevBroker, dev_broker_env, port_open
from cxkit.dev_postgres import DevPostgres

ROOT = Path(__file__).resolve().parents[1]
VAR = ROOT / "var"
BIN = Path(sys.executable).parent
SERVICES = [("crm", "CRM", dev_port("CRM_PORT")), ("cem", "CEM", dev_port("CEM_PORT"))]


def main() -> int:
    VAR.mkdir(exist_ok=True)
    kafka_port = dev_port("KAFKA_PORT")
    broker = DevBroker(port=kafka_port, log_path=VAR / "broker.log")
    # Only for the services whose database URL is not set.
    embedded = [(name, prefix) for name, prefix, _ in SERVICES if not os.environ.get(f"{prefix}_DATABASE_URL")]
    pg_port = dev_port("PG_PORT")
    postgres = DevPostgres(VAR / "pgdata", port=pg_port, log_path=VAR / "postgres.log") if embedded else None
    children: list[subprocess.Popen[bytes]] = []

    def shutdown(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        broker.stop()
        if postgres is not None:
            postgres.stop()

    if port_open("127.0.0.1", kafka_port):
        print(f"port {kafka_port} is taken (another `make run`?). Stop it, or set KAFKA_PORT.", file=sys.stderr)
        return 1
    for _, _, port in SERVICES:
        if port_open("127.0.0.1", port):
            print(f"port {port} is taken. Stop what uses it, or set CRM_PORT / CEM_PORT.", file=sys.stderr)
            return 1
    if postgres is not None and port_open("127.0.0.1", pg_port) and not postgres.running:
        print(f"port {pg_port} is taken. Stop what uses it, or set PG_PORT.", file=sys.stderr)
        return 1

    database_urls = {prefix: os.environ.get(f"{prefix}_DATABASE_URL", "") for _, prefix, _ in SERVICES}
    if postgres is not None:
        print(f"starting PostgreSQL on 127.0.0.1:{pg_port} (data in var/pgdata) ...", flush=True)
        try:
            postgres.start()
            for name, prefix in embedded:
                postgres.ensure_database(name)
                database_urls[prefix] = postgres.async_url(name)
        except BaseException:
            postgres.stop()
            raise
    print(f"starting the dev broker on 127.0.0.1:{kafka_port} (memory only) ...", flush=True)
    try:
        broker.start()
    except BaseException:
        shutdown()
        raise
    key_file = VAR / "dev-api-key"
    if not key_file.exists():
        key_file.write_text("cx_dev_" + secrets.token_urlsafe(24) + "\n")
    dev_key = key_file.read_text().strip()
    try:
        for name, prefix, port in SERVICES:
            env = {
                **os.environ,
                f"{prefix}_DATABASE_URL": database_urls[prefix],
                f"{prefix}_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                **dev_broker_env(prefix),
                f"{prefix}_LOG_JSON": os.environ.get(f"{prefix}_LOG_JSON", "false"),
                f"{prefix}_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            }
            if name == "crm":
                env.setdefault("CRM_DOCUMENTS_DIR", str(VAR / "documents"))
            subprocess.run([str(BIN / name), "migrate"], env=env, check=True)
            subprocess.run(
                [str(BIN / name), "api-keys", "create", "--name", "dev", "--scopes", "admin", "--key", dev_key],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            # The dev broker keeps nothing across runs: send the events of the last day again
            # (consumers skip those they already applied), so none is lost between two runs.
            subprocess.run([str(BIN / name), "outbox-requeue"], env=env, check=True)
            children.append(
                subprocess.Popen(
                    [str(BIN / "uvicorn"), "--factory", f"{name}.main:create_app", "--host", "127.0.0.1", "--port", str(port)],
                    env=env,
                )
            )
        for _, _, port in SERVICES:
            wait_healthy(f"http://127.0.0.1:{port}/health")
    except BaseException:
        shutdown()
        raise

    # Explicit handlers: a shell that starts us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    database = (
        f"  postgres     {', '.join(postgres.dsn(name) for name, _ in embedded)}  (data in var/pgdata)\n"
        if postgres is not None
        else "  postgres     as set in CRM_DATABASE_URL / CEM_DATABASE_URL\n"
    )
    print(
        "\n"
        f"  crm-service  http://127.0.0.1:{SERVICES[0][2]}/docs\n"
        f"  cem-service  http://127.0.0.1:{SERVICES[1][2]}/docs\n"
        f"  broker       {broker.bootstrap}\n"
        f"{database}"
        f"  dev API key  {dev_key}   (scope admin; also in var/dev-api-key)\n\n"
        f"  try: curl -H 'Authorization: Bearer {dev_key}' http://127.0.0.1:{SERVICES[0][2]}/v1/customers\n"
        "  Ctrl-C stops everything.\n",
        flush=True,
    )
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("a service exited; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        shutdown()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def wait_healthy(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


if __name__ == "__main__":
    sys.exit(main())
