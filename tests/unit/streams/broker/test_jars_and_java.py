"""The local broker: real Java, real Kafka jars (from the user cache), temporary homes and ports.

A fake ``mvn`` on PATH covers the fetch logic (progress, marker, retry after a failure)
without the network.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import uuid
from pathlib import Path

import pytest
from support.ports import local_broker_settings

from streams.broker import local as broker
from streams.broker.local import BrokerError
from streams.settings import Settings


def _local(tmp_path: Path) -> Settings:
    """A private home and port pair, but the user's jar cache (so jars are fetched once per machine)."""
    return local_broker_settings(tmp_path / "home", topic_prefix=f"t{uuid.uuid4().hex[:8]}.")


def _use_env(monkeypatch: pytest.MonkeyPatch, s: Settings) -> None:
    """What main_broker reads: the same home, port and prefix as ``s``."""
    monkeypatch.setenv("LIFECYCLE_HOME", str(s.home))
    monkeypatch.setenv("LIFECYCLE_CACHE", str(s.cache))
    monkeypatch.setenv("LIFECYCLE_BROKER_PORT", str(s.broker_port))
    monkeypatch.setenv("LIFECYCLE_TOPIC_PREFIX", s.topic_prefix)
    monkeypatch.setenv("LIFECYCLE_PARTITIONS", str(s.partitions))


def test_no_java_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    s = _local(tmp_path)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match=r"^java not found: install a Java 17\+ runtime or set JAVA_HOME$"):
        broker.start(s)

    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(BrokerError, match=r"^JAVA_HOME=.* has no bin/java: point it at a Java 17\+ runtime$"):
        broker.start(s)

    _use_env(monkeypatch, s)
    assert broker.main_broker(["start"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: JAVA_HOME=") and err.count("\n") == 1


# What mvn prints while fetching (3.8 prefixes "[INFO] " to "Downloaded from", 3.9 does not).
FAKE_MVN = """#!/bin/sh
echo run >> "{calls}"
for a in "$@"; do case "$a" in -DoutputDirectory=*) out="${{a#-DoutputDirectory=}}";; esac; done
mkdir -p "$out"
url=https://repo.maven.apache.org/maven2/org/apache/kafka/kafka-clients/4.1.1/kafka-clients-4.1.1
echo "[INFO] Scanning for projects..."
echo "Downloading from central: $url.pom"
echo "Downloaded from central: $url.pom (2 kB at 9 kB/s)"
echo "[INFO] Downloaded from central: $url.jar (12 MB at 9 MB/s)"
echo partial > "$out/{jar}"
{tail}
"""
FAIL_TAIL = """why="Could not resolve dependencies: Connect timed out"
echo "[ERROR] Failed to execute goal on project kafka-runtime: $why -> [Help 1]"
echo "[ERROR] "
echo "[ERROR] To see the full stack trace of the errors, re-run Maven with the -e switch."
exit 1"""


def _fake_mvn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool, jar: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "mvn-calls"
    mvn = bin_dir / "mvn"
    mvn.write_text(FAKE_MVN.format(calls=calls, jar=jar, tail=FAIL_TAIL if fail else "exit 0"))
    mvn.chmod(mvn.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_fetch_reports_progress_and_marks_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = dataclasses.replace(_local(tmp_path), cache=tmp_path / "cache")
    calls = _fake_mvn(tmp_path, monkeypatch, fail=False, jar="kafka-clients-4.1.1.jar")
    lines: list[str] = []
    libs = broker.ensure_jars(s, lines.append)
    assert [p.name for p in libs.iterdir()] == ["kafka-clients-4.1.1.jar"]
    assert "  [  2 files] downloaded kafka-clients-4.1.1.jar" in lines
    assert lines[-1] == f"Kafka {s.kafka_version}: 1 jars ready (2 files downloaded)"
    pom = (libs.parent / "pom.xml").read_text()
    for dep in (
        f"<artifactId>kafka_2.13</artifactId><version>{s.kafka_version}</version>",
        "<artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version>",
        "<artifactId>slf4j-api</artifactId><version>2.0.17</version>",
    ):
        assert dep in pom
    assert broker.ensure_jars(s, lines.append) == libs
    assert calls.read_text().count("run") == 1


def test_failed_fetch_is_one_line_and_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = dataclasses.replace(_local(tmp_path), cache=tmp_path / "cache")
    calls = _fake_mvn(tmp_path, monkeypatch, fail=True, jar="half.jar")
    with pytest.raises(BrokerError) as info:
        broker.ensure_jars(s)
    assert str(info.value) == (
        f"fetching Kafka {s.kafka_version} from Maven Central failed: "
        "Failed to execute goal on project kafka-runtime: Could not resolve dependencies: Connect timed out"
    )
    libs = s.cache / f"kafka-{s.kafka_version}" / "libs"
    assert not (libs.parent / ".complete").exists()

    _fake_mvn(tmp_path, monkeypatch, fail=False, jar="kafka-clients-4.1.1.jar")
    assert broker.ensure_jars(s) == libs
    assert [p.name for p in libs.iterdir()] == ["kafka-clients-4.1.1.jar"]  # the half fetch is gone
    assert calls.read_text().count("run") == 2


def test_missing_mvn_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = dataclasses.replace(_local(tmp_path), cache=tmp_path / "cache")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match=r"^mvn not found: install Apache Maven .*\(needed once\)$"):
        broker.ensure_jars(s)
