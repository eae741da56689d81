#!/usr/bin/env python3
"""Apache Avro for Java (1.12.2, from Maven Central) as an oracle for schema compatibility.

  scripts/avro_oracle.py fetch            fetch the jars and compile the oracle (cached)
  scripts/avro_oracle.py judge < pairs    one JVM judges JSON lines (AvroOracle.java has the
                                          format); answers are JSON lines on stdout

The jars and the compiled class live under ~/.cache/kafka-recovery/avro-oracle-1.12.2
(KAFKA_LAUNCHER_HOME moves the cache root, as for scripts/kafka), rebuilt only when
scripts/avro-oracle/pom.xml or AvroOracle.java change. Standard library only; `fetch` prints
the classpath as its last line of stdout. `judge()` is the same from Python (the tests).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

AVRO_VERSION = "1.12.2"
HERE = Path(__file__).resolve().parent
SOURCES = HERE / "avro-oracle"
POM = SOURCES / "pom.xml"
JAVA_SOURCE = SOURCES / "AvroOracle.java"
SETTINGS = HERE / "maven-settings.xml"
CACHE = Path(os.environ.get("KAFKA_LAUNCHER_HOME") or Path.home() / ".cache" / "kafka-recovery")
HOME = CACHE / f"avro-oracle-{AVRO_VERSION}"
LIBS = HOME / "lib"
CLASSES = HOME / "classes"
MARKER = HOME / ".complete"


def say(message: str) -> None:
    print(f"avro-oracle: {message}", file=sys.stderr, flush=True)


def stamp() -> str:
    digest = hashlib.sha256(POM.read_bytes() + JAVA_SOURCE.read_bytes()).hexdigest()
    return f"avro {AVRO_VERSION} sources-sha256 {digest}\n"


def built() -> bool:
    try:
        return MARKER.read_text() == stamp()
    except OSError:
        return False


def tool(name: str) -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / name).exists():
        return str(Path(home) / "bin" / name)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"avro-oracle: {name} (Java 17 or newer) is needed")
    return found


def classpath() -> str:
    return f"{CLASSES}{os.pathsep}{LIBS / '*'}"


def fetch() -> str:
    """Jars from Maven Central (via ~/.m2) and the compiled oracle, once per source change."""
    if built():
        return classpath()
    HOME.mkdir(parents=True, exist_ok=True)
    with (HOME / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if built():
            return classpath()
        if shutil.which("mvn") is None:
            raise SystemExit("avro-oracle: Maven (mvn) is needed to fetch Apache Avro")
        began = time.monotonic()
        say(f"fetching Apache Avro {AVRO_VERSION} from Maven Central into {LIBS}")
        shutil.rmtree(LIBS, ignore_errors=True)
        shutil.rmtree(CLASSES, ignore_errors=True)
        for command in (
            ["mvn", "-q", "-B", "-s", str(SETTINGS), "-f", str(POM),
             "dependency:copy-dependencies", f"-DoutputDirectory={LIBS}",
             "-DincludeScope=runtime"],
            [tool("javac"), "-nowarn", "-d", str(CLASSES), "-cp", str(LIBS / "*"),
             str(JAVA_SOURCE)],
        ):
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise SystemExit(f"avro-oracle: {command[0]} failed (exit {result.returncode}):"
                                 f"\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        MARKER.write_text(stamp())
        say(f"ready in {time.monotonic() - began:.1f}s")
    return classpath()


def command() -> list[str]:
    # One short-lived JVM: C1 only and a small heap start fastest for a few thousand pairs.
    return [tool("java"), "-XX:TieredStopAtLevel=1", "-Xss8m", "-Xmx512m",
            "-Dslf4j.internal.verbosity=ERROR", "-cp", fetch(), "AvroOracle"]


def judge(requests: Iterable[dict], timeout: float = 300) -> list[dict]:
    """Judge every request in one JVM; the answers in the same order."""
    lines = "".join(json.dumps(r) + "\n" for r in requests)
    result = subprocess.run(command(), input=lines, capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"the Avro oracle failed (exit {result.returncode}):\n"
                           f"{result.stderr[-3000:]}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def main() -> int:
    verb = sys.argv[1] if len(sys.argv) > 1 else ""
    if verb == "fetch":
        print(fetch())
        return 0
    if verb == "judge":
        return subprocess.call(command())
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
