#!/usr/bin/env bash
# Flame graphs of heymilo-pipeline backfill as users run it (py-spy, from the bench extra), against the fast
# fake of the API (bench/fake_api.py): one posting of 100,000 candidates over a year, and 50 postings of a few
# hundred candidates over 90 days. Writes bench/profile-100k.svg and bench/profile-50x90.svg.
#   .venv/bin/pip install -e '.[bench]' && bench/profile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/.venv/bin
WORK=$(mktemp -d "${TMPDIR:-/tmp}/heymilo-profile.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

profile() {  # name, fake-api args, last day, posting filter (jq-free: python picks the ids)
  local name=$1 days=$2 last=$3 tenant=$4 pick=$5
  "$BIN/python" bench/fake_api.py --port 0 --days "$days" --tenant "$tenant" > "$WORK/$name.fake" &
  until [ "$(wc -l < "$WORK/$name.fake")" -ge 2 ]; do sleep 0.5; done
  local url postings
  url=$(head -1 "$WORK/$name.fake")
  postings=$(sed -n 2p "$WORK/$name.fake" | "$BIN/python" -c "import json,sys; c=json.load(sys.stdin); $pick")
  mkdir -p "$WORK/$name/home"
  : > "$WORK/$name/home/dagster.yaml"
  export HEYMILO_API_KEY=sk_bench_local-simulator HEYMILO_BASE_URL=$url HEYMILO_DATA_DIR=$WORK/$name/data \
    HEYMILO_START_DATE=2025-01-01 HEYMILO_RATE_LIMIT=1000000 HEYMILO_POSTINGS=$postings DAGSTER_HOME=$WORK/$name/home
  "$BIN/heymilo-pipeline" postings > /dev/null 2>&1
  "$BIN/py-spy" record --threads -r 200 -o "bench/profile-$name.svg" -- \
    "$BIN/python" "$BIN/heymilo-pipeline" backfill --start 2025-01-01 --end "$last"
  kill %1 2>/dev/null || true
  wait 2>/dev/null || true
}

profile 100k 365 2025-12-31 7:4:100000:100000 \
  "print(next(p for p, n in c.items() if n == 100000))"
profile 50x90 90 2025-03-31 13:55:200:600 \
  "print(','.join(sorted(p for p, n in c.items() if n > 0)[:50]))"
