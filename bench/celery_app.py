"""The Celery side of the comparison: an app with the sample's functions as tasks.

Configured from the environment so that the worker subprocess (``celery -A
bench.celery_app worker``) and the bench's client agree: ``BENCH_CELERY_BROKER``,
``BENCH_CELERY_BACKEND`` (``rpc://``, or ``db+postgresql://...`` for chords, which
``rpc://`` does not support), ``BENCH_CELERY_QUEUE`` (unique per run),
``BENCH_CELERY_QUEUE_TYPE`` (quorum|classic), ``BENCH_CELERY_CONFIRM`` (1: publisher
confirms) and ``BENCH_CELERY_SCHEMA`` (the PostgreSQL schema of the result tables).
Every task is ``acks_late`` and ``reject_on_worker_lost``.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Exchange, Queue

AMQP = os.environ.get("EC_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")


def make_app(*, broker: str = AMQP, backend: str = "rpc://", queue: str = "bench.celery",
             queue_type: str = "quorum", confirm: bool = False, schema: str | None = None) -> Celery:
    app = Celery("bench_celery", broker=broker, backend=backend, set_as_current=False)
    arguments = {"x-queue-type": "quorum"} if queue_type == "quorum" else None
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_routing_key=queue,
        task_queues=[Queue(queue, Exchange(queue, "direct", durable=True), routing_key=queue,
                           durable=True, queue_arguments=arguments)],
        task_default_delivery_mode="persistent",
        broker_transport_options={"confirm_publish": confirm},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        result_expires=None,
    )
    if schema:
        app.conf.database_table_schemas = {"task": schema, "group": schema}
        app.conf.database_engine_options = {"pool_pre_ping": True}

    @app.task(name="bench.noop", acks_late=True, reject_on_worker_lost=True, shared=False)
    def noop(*args, **kwargs):
        return None

    @app.task(name="bench.emit_one", acks_late=True, reject_on_worker_lost=True, shared=False)
    def emit_one():
        return 1

    @app.task(name="bench.add_two", acks_late=True, reject_on_worker_lost=True, shared=False)
    def add_two(a, b):
        return a + b

    @app.task(name="bench.total", acks_late=True, reject_on_worker_lost=True, shared=False)
    def total(values, *more):
        return sum(values) + sum(more)

    return app


def from_env() -> Celery:
    e = os.environ.get
    return make_app(broker=e("BENCH_CELERY_BROKER", AMQP), backend=e("BENCH_CELERY_BACKEND", "rpc://"),
                    queue=e("BENCH_CELERY_QUEUE", "bench.celery"),
                    queue_type=e("BENCH_CELERY_QUEUE_TYPE", "quorum"),
                    confirm=e("BENCH_CELERY_CONFIRM", "0") == "1", schema=e("BENCH_CELERY_SCHEMA") or None)


app = from_env()
