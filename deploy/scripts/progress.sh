#!/usr/bin/env bash
# Run a long first-time step (the TimescaleDB build, the virtualenv, the native build) with its
# output in a log, showing that it moves: the elapsed time, and the build's own percentage when it
# prints one (CMake's "[ 42%]"). On a terminal the line is redrawn in place every second,
# otherwise a line every 15 s. On failure, the log's last lines and the command's exit status.
#
# Usage: progress.sh LABEL LOG COMMAND [ARG...]
set -uo pipefail

label=$1
log=$2
shift 2
mkdir -p "$(dirname "$log")"
start=$SECONDS
"$@" >"$log" 2>&1 &
pid=$!
# Ctrl-C or a kill of make stops the step too, not only this script.
trap 'kill "$pid" 2>/dev/null' INT TERM
on_tty=0
if [ -t 1 ]; then on_tty=1; fi
shown=-1
while kill -0 "$pid" 2>/dev/null; do
  sleep 1
  elapsed=$((SECONDS - start))
  percent=$(grep -o '^\[ *[0-9]*%\]' "$log" 2>/dev/null | tail -n 1 | tr -d '[] ' || true)
  line="  $label: ${elapsed} s${percent:+, $percent}"
  if [ "$on_tty" -eq 1 ]; then
    printf '\r%s   ' "$line"
  elif [ $((elapsed % 15)) -eq 0 ] && [ "$elapsed" -ne "$shown" ]; then
    echo "$line"
    shown=$elapsed
  fi
done
wait "$pid"
status=$?
elapsed=$((SECONDS - start))
if [ "$on_tty" -eq 1 ]; then printf '\r\033[K'; fi
if [ "$status" -eq 0 ]; then
  echo "  $label: done in ${elapsed} s"
else
  echo "  $label: failed after ${elapsed} s (exit status $status); the end of $log:"
  tail -n 30 "$log"
fi
exit "$status"
