"""Shared fixtures: isolated home directories, real services (skip loudly, or fail under
EC_REQUIRE_SERVICES=1), and paired store/transport URLs so tests run on both backends."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

AMQP_URL = os.environ.get("EC_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
PG_URL = os.environ.get("EC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE = os.environ.get("EC_REQUIRE_SERVICES") == "1"


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip with a loud reason when a service is down; fail under EC_REQUIRE_SERVICES=1."""
    if reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port} (start it: see DEVELOPERS.md)"
    if REQUIRE:
        pytest.fail(f"EC_REQUIRE_SERVICES=1 but {message}")
    pytest.skip(f"SKIPPED, SERVICE DOWN: {message}")


def pytest_collection_modifyitems(config, items) -> None:
    """The fault suite restarts RabbitMQ and PostgreSQL under every test sharing them, and
    the multihost tests run (and kill) a RabbitMQ cluster of three more nodes: neither runs
    beside other tests, so under pytest-xdist with more than one worker they skip."""
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) <= 1:
        return
    alone = {
        "faults": pytest.mark.skip(reason="SKIPPED, RUNS ALONE: the fault suite restarts services; "
                                          "run it with a plain `pytest -m faults`, not under -n"),
        "multihost": pytest.mark.skip(reason="SKIPPED, RUNS ALONE: the multihost tests run test hosts and a "
                                             "RabbitMQ cluster; run them with a plain `pytest -m multihost`"),
    }
    for item in items:
        for marker, skip in alone.items():
            if item.get_closest_marker(marker):
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own EC_HOME (config, data, cache) and NO_COLOR."""
    home = tmp_path / "echome"
    home.mkdir()
    monkeypatch.setenv("EC_HOME", str(home))
    monkeypatch.setenv("NO_COLOR", "1")
    for var in ("EC_DB", "EC_BROKER", "EC_CONFIG", "EC_FLOW", "EC_USER"):
        monkeypatch.delenv(var, raising=False)
    # broker queues get a per-test prefix: runs sharing one RabbitMQ never see each other's
    monkeypatch.setenv("EC_NAMESPACE", f"t{uuid.uuid4().hex[:10]}")
    return home


@pytest.fixture
def amqp_url() -> str:
    need_service("RabbitMQ", "127.0.0.1", 5672)
    return AMQP_URL


@pytest.fixture(scope="session")
def rabbit_cluster_session():
    """A RabbitMQ cluster of three extra nodes on this machine (tests/rabbit_cluster.py),
    started once per session and removed at its end. Skips loudly without root or
    RabbitMQ's server script; fails under EC_REQUIRE_SERVICES=1."""
    from rabbit_cluster import RabbitCluster, unavailable

    why = unavailable()
    if why:
        if REQUIRE:
            pytest.fail(f"EC_REQUIRE_SERVICES=1 but no RabbitMQ cluster: {why}")
        pytest.skip(f"SKIPPED, NO RABBITMQ CLUSTER: {why}")
    cluster = RabbitCluster()
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def rabbit_cluster(rabbit_cluster_session):
    """The session's cluster with every node running, before and after the test (a test
    that kills a node gets it restarted here if it did not restart it itself)."""
    def restart_stopped() -> None:
        running = rabbit_cluster_session.running()
        for i in range(len(rabbit_cluster_session.nodes)):
            if i not in running:
                rabbit_cluster_session.start(i)

    restart_stopped()
    yield rabbit_cluster_session
    restart_stopped()


@pytest.fixture
def pg_url():
    """A PostgreSQL URL with a fresh schema, dropped afterwards."""
    need_service("PostgreSQL", "127.0.0.1", 5432)
    import psycopg2

    schema = f"ec_test_{uuid.uuid4().hex[:10]}"
    def execute(sql: str) -> None:  # a fresh connection each time: a test may restart the server
        conn = psycopg2.connect(PG_URL)
        conn.autocommit = True
        try:
            conn.cursor().execute(sql)
        finally:
            conn.close()

    execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?schema={schema}"
    finally:
        from ectool.store import close_store

        close_store()
        execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "amqp"])
def broker_url(request, tmp_path) -> str:
    """Each transport in turn: the embedded SQLite queue and RabbitMQ."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'queue.db'}"
    return request.getfixturevalue("amqp_url")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """Each store in turn: SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ec.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def queue_name() -> str:
    """A unique queue name, so RabbitMQ tests never see each other's messages."""
    return f"ec.test.{uuid.uuid4().hex[:12]}"
