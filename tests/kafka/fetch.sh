#!/usr/bin/env bash
# Fetches Apache Kafka's jars (tests/kafka/pom.xml) with Maven into
# $VIGIL_KAFKA_LIBS (default ~/.cache/vigil/kafka-<version>/libs), where the
# tests' and the benchmark's launcher (processor/apache_kafka.rs) finds them.
# Does nothing when they are there already.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version=$(grep -A1 '<artifactId>kafka_2.13</artifactId>' "$here/pom.xml" | sed -n 's:.*<version>\(.*\)</version>.*:\1:p')
libs="${VIGIL_KAFKA_LIBS:-$HOME/.cache/vigil/kafka-$version/libs}"
# A fetch ends by copying the pom to .complete: a changed pom fetches again.
if [ -f "$libs/kafka_2.13-$version.jar" ] && cmp -s "$here/pom.xml" "$libs/.complete"; then
    echo "Apache Kafka $version: $libs"
    exit 0
fi
command -v mvn >/dev/null || { echo "mvn not found: install Maven (apt-get install maven)" >&2; exit 1; }
command -v java >/dev/null || { echo "java not found: Kafka $version needs Java 17 or later" >&2; exit 1; }
rm -rf "$libs"
mkdir -p "$libs"
mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs"
cp "$here/pom.xml" "$libs/.complete"
echo "Apache Kafka $version: $libs ($(ls "$libs" | wc -l) jars)"
