#!/usr/bin/env bash
# run-fuzzer.sh FUZZER SECONDS [SEED_CORPUS_DIR]
# Runs a libFuzzer target for SECONDS on a scratch copy of the seed corpus
# (the source tree is never written). Fails on any crash, leak or timeout.
set -eu
fuzzer=$(realpath "$1"); secs=$2; seeds=${3:+$(realpath "$3")}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus"
if [ -n "$seeds" ] && [ -d "$seeds" ]; then
	cp -r "$seeds"/. "$work/corpus/"
fi
cd "$work"
exec "$fuzzer" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 corpus
