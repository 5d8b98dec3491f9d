#!/bin/bash
# A headless `heymilo-pipeline backfill` in a real terminal (tmux), captured mid-run and at the end into
# docs/terminal.md: what a user sees instead of Dagster's event stream (that stays in the run log).
#   bench/terminal_capture.sh          (needs tmux; takes about a minute)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'tmux kill-session -t heymilo-capture 2>/dev/null || true; rm -rf "$WORK"' EXIT
START=$(date -u -d "-30 days" +%F); END=$(date -u -d "-1 day" +%F)
cat > "$WORK/run.sh" <<SCRIPT
cd "$WORK"
export PYTHONPATH="${PYTHONPATH:-}"
"$ROOT/.venv/bin/heymilo-sim" serve --port 0 --api-key sk_test_capture --postings 6 --start $START --end $END \
  --min-candidates 1500 --max-candidates 3000 --error-rate 0.03 > sim.log 2>&1 &
until grep -q "http://" sim.log; do sleep 0.2; done
export HEYMILO_API_KEY=sk_test_capture HEYMILO_BASE_URL=\$(grep -o "http://[0-9.:]*" sim.log | head -1)
export HEYMILO_DATA_DIR=$WORK/data HEYMILO_START_DATE=$START HEYMILO_RATE_LIMIT=300 DAGSTER_HOME=$WORK/home
mkdir -p $WORK/home && printf 'telemetry:\n  enabled: false\nnux:\n  enabled: false\n' > $WORK/home/dagster.yaml
echo '\$ heymilo-pipeline backfill --start $START --end $END'
"$ROOT/.venv/bin/heymilo-pipeline" backfill --start $START --end $END
echo "(exit \$?)"; touch done; kill %1; sleep 600
SCRIPT
tmux new-session -d -s heymilo-capture -x 150 -y 24 "bash $WORK/run.sh"
# Midway: of the views taken while the run was fetching (its line counts pages, not yet done), the middle one.
VIEWS=()
until [ -e "$WORK/done" ]; do
  VIEW=$(tmux capture-pane -p -t heymilo-capture | sed '/^$/d')
  if grep -qE "· [1-9][0-9,]* pages" <<< "$VIEW" && ! grep -q "· done ·" <<< "$VIEW"; then VIEWS+=("$VIEW"); fi
  sleep 0.5
done
MID=${VIEWS[$(( ${#VIEWS[@]} / 2 ))]}
END_CAPTURE=$(tmux capture-pane -p -t heymilo-capture | sed '/^$/d')
{
  echo "# The terminal during a headless backfill"
  echo
  echo "> Captured by \`bench/terminal_capture.sh\` ($(date -u +%F), tmux 150x24): \`heymilo-pipeline backfill\` of 6"
  echo "> simulated postings (one a test posting, skipped) at HEYMILO_RATE_LIMIT=300, 3 % injected 5xx."
  echo
  echo "The last line redraws four times a second: postings done, pages, rows (of the API's total_count once"
  echo "every posting has said it), requests and retries, and the time the remaining requests take at the"
  echo "key's rate. Dagster's event stream stays in the run log (the UI shows it); \`--verbose\` prints it too."
  echo
  echo "Midway:"
  echo
  echo '```'
  echo "$MID"
  echo '```'
  echo
  echo "At the end:"
  echo
  echo '```'
  echo "$END_CAPTURE"
  echo '```'
} > "$ROOT/docs/terminal.md"
echo "wrote $ROOT/docs/terminal.md"
