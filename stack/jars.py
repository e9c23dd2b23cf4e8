"""The Kafka jars: fetched once with Maven into the user cache, then reused without network."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from analytics_core.settings import Settings
from stack.checks import StackError, check_mvn
from stack.procs import tail

POM = Path(__file__).with_name("kafka-pom.xml")
MARKER = ".complete"
FETCH_TIMEOUT_S = 900


def kafka_home(settings: Settings) -> Path:
    return settings.cache_dir.expanduser().absolute() / f"kafka-{settings.kafka_version}"


def libs_dir(settings: Settings) -> Path:
    return kafka_home(settings) / "libs"


def is_cached(settings: Settings) -> bool:
    """True when a previous fetch finished: the marker is written only after every jar is in place."""
    return (kafka_home(settings) / MARKER).is_file() and any(libs_dir(settings).glob("*.jar"))


def mvn_command(mvn: str, output_dir: Path, version: str) -> list[str]:
    return [
        mvn,
        "-B",
        "-ntp",
        "-Dstyle.color=never",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={output_dir}",
        "-DincludeScope=runtime",
        f"-Dkafka.version={version}",
    ]


def _error_lines(log: Path) -> str:
    """Maven's [ERROR] lines if any, else the log's tail: what explains a failed fetch."""
    text = tail(log, 200)
    errors = []
    for line in text.splitlines():
        if "To see the full stack trace" in line:
            break  # Maven's generic advice follows; the real errors came before it.
        if "[ERROR]" in line and line.split("[ERROR]", 1)[1].strip():
            errors.append(line)
    return "\n".join(errors[:15]) if errors else tail(log, 15) or f"(no output in {log})"


def fetch(settings: Settings, log: Path) -> Path:
    """Download the jars with Maven into a scratch folder, then move it into place and mark it done."""
    mvn = check_mvn(settings.mvn_bin)
    home = kafka_home(settings)
    partial = home / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = mvn_command(mvn, partial, settings.kafka_version)
    try:
        with open(log, "wb") as out:
            code = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=FETCH_TIMEOUT_S
            ).returncode
    except subprocess.TimeoutExpired:
        raise StackError(
            f"Maven did not finish fetching Kafka {settings.kafka_version} within {FETCH_TIMEOUT_S} s",
            f"check network access to Maven Central; the full output is in {log}",
        ) from None
    except OSError as exc:
        raise StackError(f"could not run Maven ({mvn}): {exc}", "check ANALYTICS_MVN_BIN") from None
    if code != 0 or not any(partial.glob("*.jar")):
        shutil.rmtree(partial, ignore_errors=True)
        raise StackError(
            f"Maven failed to fetch Kafka {settings.kafka_version} (exit {code}):\n{_error_lines(log)}",
            f"check ANALYTICS_KAFKA_VERSION and network access to Maven Central; full output in {log}",
        )
    libs = libs_dir(settings)
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    (home / MARKER).write_text(f"kafka {settings.kafka_version}\n")
    return libs
