"""The single-node KRaft Kafka of the stack: config files, storage format, start, and health check."""

from __future__ import annotations

import base64
import logging
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from analytics_core.settings import Settings
from stack.checks import StackError
from stack.procs import size_of, spawn, tail

HEALTH_TOPIC = "stack.health"
NAME = "kafka"

# librdkafka logs every refused connection; while we wait for a broker to come up that is just noise.
_quiet = logging.getLogger("stack.kafka.client")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def kafka_dir(settings: Settings) -> Path:
    return settings.state_dir.absolute() / "kafka"


def data_dir(settings: Settings) -> Path:
    return kafka_dir(settings) / "data"


def log_path(settings: Settings) -> Path:
    """The broker's own log (log4j2)."""
    return settings.state_dir.absolute() / "logs" / "kafka.log"


def out_path(settings: Settings) -> Path:
    """What the JVM prints on stdout/stderr (crashes, log4j status lines)."""
    return settings.state_dir.absolute() / "logs" / "kafka.out"


def pid_path(settings: Settings) -> Path:
    return settings.state_dir.absolute() / "pids" / "kafka.pid"


def server_properties(settings: Settings) -> str:
    port, ctl = settings.kafka_port, settings.kafka_controller_port
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{ctl}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctl}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data_dir(settings)}",
            "num.partitions=1",
            # One broker: every internal topic must make do with one replica.
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "",
        ]
    )


def log4j2_properties(settings: Settings) -> str:
    return "\n".join(
        [
            "status = warn",
            # Kafka logs its own shutdown from a JVM shutdown hook; log4j's hook would close the file first.
            "shutdownHook = disable",
            "appender.file.type = RollingFile",
            "appender.file.name = file",
            f"appender.file.fileName = {log_path(settings)}",
            f"appender.file.filePattern = {log_path(settings)}.%i",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "appender.file.policies.type = Policies",
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size = 50MB",
            "appender.file.strategy.type = DefaultRolloverStrategy",
            "appender.file.strategy.max = 3",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.file.ref = file",
            "",
        ]
    )


def write_config(settings: Settings) -> tuple[Path, Path]:
    """Write server.properties and log4j2.properties (every start, so port changes apply)."""
    home = kafka_dir(settings)
    home.mkdir(parents=True, exist_ok=True)
    log_path(settings).parent.mkdir(parents=True, exist_ok=True)
    props, log4j = home / "server.properties", home / "log4j2.properties"
    props.write_text(server_properties(settings))
    log4j.write_text(log4j2_properties(settings))
    return props, log4j


def java_command(settings: Settings, java: str, libs: Path, log4j: Path, *args: str) -> list[str]:
    return [
        java,
        f"-Xmx{settings.kafka_heap}",
        f"-Xms{settings.kafka_heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        f"{libs}/*",
        *args,
    ]


def new_cluster_id() -> str:
    """A random Kafka Uuid in its base64 form; Kafka rejects ids that start with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def is_formatted(settings: Settings) -> bool:
    return (data_dir(settings) / "meta.properties").is_file()


def format_storage(settings: Settings, java: str, libs: Path, props: Path, log4j: Path) -> None:
    """Format the KRaft storage; only on first start, later starts keep the data."""
    if is_formatted(settings):
        return
    cmd = java_command(
        settings, java, libs, log4j, "kafka.tools.StorageTool", "format", "-t", new_cluster_id(), "-c", str(props)
    )
    out = out_path(settings)
    since = size_of(out)
    with open(out, "ab") as fh:
        code = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, timeout=120
        ).returncode
    if code != 0:
        raise StackError(
            f"formatting Kafka storage in {data_dir(settings)} failed (exit {code}):\n{tail(out, 15, since)}",
            f"see {out} and {log_path(settings)}; if the data folder is damaged, remove it and run up again",
        )


def start(settings: Settings, java: str, libs: Path) -> int:
    """Write config, format on first start, start the broker detached; returns its pid."""
    props, log4j = write_config(settings)
    format_storage(settings, java, libs, props, log4j)
    cmd = java_command(settings, java, libs, log4j, "kafka.Kafka", str(props))
    return spawn(cmd, kafka_dir(settings), out_path(settings), pid_path(settings), ["kafka.Kafka", str(props)])


def _conf(settings: Settings, **extra: Any) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka_bootstrap, "logger": _quiet, "error_cb": lambda _e: None, **extra}


def _ensure_health_topic(admin: AdminClient, settings: Settings, timeout: float) -> None:
    if HEALTH_TOPIC in admin.list_topics(timeout=timeout).topics:
        return
    topic = NewTopic(
        HEALTH_TOPIC,
        num_partitions=1,
        replication_factor=settings.kafka_replication_factor,
        config={"retention.ms": str(3_600_000)},
    )
    for future in admin.create_topics([topic], operation_timeout=timeout).values():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def round_trip(settings: Settings, timeout: float = 10.0) -> bool:
    """Healthy means a unique record produced to stack.health is consumed back within timeout."""
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(0.1, deadline - time.monotonic())

    payload = uuid.uuid4().hex.encode()
    try:
        _ensure_health_topic(AdminClient(_conf(settings)), settings, left())
        producer = Producer(_conf(settings, acks="all", **{"message.timeout.ms": int(left() * 1000)}))
        delivered: list[Any] = []
        producer.produce(HEALTH_TOPIC, payload, on_delivery=lambda err, msg: delivered.append((err, msg)))
        producer.flush(left())
        if not delivered or delivered[0][0] is not None:
            return False
        msg = delivered[0][1]
        # A throwaway group with manual assignment: no rebalance, nothing committed.
        consumer = Consumer(
            _conf(settings, **{"group.id": f"stack-health-{payload.decode()}", "enable.auto.commit": False})
        )
        try:
            consumer.assign([TopicPartition(HEALTH_TOPIC, msg.partition(), msg.offset())])
            while time.monotonic() < deadline:
                got = consumer.poll(min(0.5, left()))
                if got is not None and got.error() is None and got.value() == payload:
                    return True
        finally:
            consumer.close()
    except KafkaException:
        return False
    return False
