#!/usr/bin/env bash
# Reproduces the "Server under load" figures of docs/benchmarks.md: the real
# flagpole binary on loopback (embedded store, request logs off), a 100-flag
# set (a third static, a third `in`/`==` rules on an email attribute, a third
# `fractional`), and wrk sending OFREP requests with contexts drawn from a
# million users. For each scenario it reports requests/s, p50/p90/p99 latency
# and the server's CPU time per request (utime+stime from /proc/PID/stat).
#
#   scripts/loadtest.sh                    # 16 connections, 10 s per scenario
#   DURATION=30 CONNECTIONS=32 scripts/loadtest.sh
#
# Scenarios: noop (a no-op echo handler in the same server, the ceiling),
# single (one random flag per request), bulk (all 100 flags per request).
# Needs: go, wrk (Debian package "wrk"), curl, awk. Linux only (/proc). PORT (default
# 18089) must be free.
set -euo pipefail

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}
SCENARIOS=${SCENARIOS:-"noop single bulk"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

for tool in go wrk curl; do
  command -v "$tool" >/dev/null || { echo "loadtest: $tool is required (wrk: apt-get install wrk)" >&2; exit 1; }
done

WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "building flagpole..." >&2
(cd "$ROOT" && go build -o "$WORK/flagpole" ./cmd/flagpole)

# The 100-flag set: flag-000..flag-032 static, flag-033..flag-065 rules on the
# email (`in` on the domain, or `==` on one address, or `in` a list), and
# flag-066..flag-099 fractional rollouts.
{
  echo '{"flags":{'
  for i in $(seq 0 99); do
    key=$(printf 'flag-%03d' "$i")
    sep=','; [ "$i" -eq 99 ] && sep=''
    if [ "$i" -lt 33 ]; then
      if [ $((i % 2)) -eq 0 ]; then
        echo "\"$key\":{\"state\":\"ENABLED\",\"variants\":{\"on\":true,\"off\":false},\"defaultVariant\":\"on\"}$sep"
      else
        echo "\"$key\":{\"state\":\"ENABLED\",\"variants\":{\"a\":\"alpha\",\"b\":\"beta\"},\"defaultVariant\":\"b\"}$sep"
      fi
    elif [ "$i" -lt 66 ]; then
      case $((i % 3)) in
        0) rule='{"in":["@acme.com",{"var":"email"}]}' ;;
        1) rule="{\"==\":[{\"var\":\"email\"},\"user$i@globex.com\"]}" ;;
        2) rule="{\"in\":[{\"var\":\"email\"},[\"user1@acme.com\",\"user2@globex.com\",\"user3@example.com\",\"user$i@initech.com\"]]}" ;;
      esac
      echo "\"$key\":{\"state\":\"ENABLED\",\"variants\":{\"on\":true,\"off\":false},\"defaultVariant\":\"off\",\"targeting\":{\"if\":[$rule,\"on\",\"off\"]}}$sep"
    else
      echo "\"$key\":{\"state\":\"ENABLED\",\"variants\":{\"red\":\"red\",\"green\":\"green\",\"blue\":\"blue\"},\"defaultVariant\":\"red\",\"targeting\":{\"fractional\":[[\"red\",50],[\"green\",30],[\"blue\",20]]}}$sep"
    fi
  done
  echo '}}'
} > "$WORK/flags.json"

ADMIN="loadtest-admin-key-$(date +%s%N)"
PORT=${PORT:-18089}
URL="http://127.0.0.1:$PORT"
FLAGPOLE_ADMIN_KEY=$ADMIN "$WORK/flagpole" serve --addr "127.0.0.1:$PORT" --data-dir "$WORK/data" \
  --flags "$WORK/flags.json" --env default --log-level warn --noop-bench 2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "$URL/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$URL/readyz" >/dev/null || { echo "loadtest: the server did not become ready:" >&2; cat "$WORK/server.log" >&2; exit 1; }

SDK=$(FLAGPOLE_URL=$URL FLAGPOLE_TOKEN=$ADMIN "$WORK/flagpole" keys create --name loadtest --role sdk --env default -o json \
  | sed -n 's/.*"secret": *"\([^"]*\)".*/\1/p')
[ -n "$SDK" ] || { echo "loadtest: could not create an sdk key" >&2; exit 1; }
# Sanity: both endpoints answer 200.
curl -fsS -X POST -H "Authorization: Bearer $SDK" -d '{"context":{"targetingKey":"u","email":"a@acme.com"}}' "$URL/ofrep/v1/evaluate/flags/flag-033" >/dev/null
curl -fsS -X POST -H "Authorization: Bearer $SDK" -d '{"context":{"targetingKey":"u"}}' "$URL/ofrep/v1/evaluate/flags" >/dev/null

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { sed 's/^.*) //' "/proc/$SERVER_PID/stat" | awk '{print $12 + $13}'; }

echo "| scenario | requests/s | p50 | p90 | p99 | server CPU/request | requests | errors |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for scenario in $SCENARIOS; do
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s "$ROOT/scripts/loadtest.lua" "$URL" -- "$scenario" "$SDK" 100 >/dev/null
  before=$(cpu_ticks)
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" -s "$ROOT/scripts/loadtest.lua" "$URL" -- "$scenario" "$SDK" 100)
  after=$(cpu_ticks)
  result=$(echo "$out" | sed -n 's/^RESULT //p')
  [ -n "$result" ] || { echo "loadtest: wrk printed no result:" >&2; echo "$out" >&2; exit 1; }
  echo "$result" | awk -v name="$scenario" -v before="$before" -v after="$after" -v tck="$CLK_TCK" '{
    n = $1; rps = n / ($2 / 1e6); cpu = (after - before) / tck * 1e6 / (n > 0 ? n : 1)
    printf "| %s | %.0f | %.2f ms | %.2f ms | %.2f ms | %.1f µs | %d | %d |\n", name, rps, $5 / 1000, $6 / 1000, $7 / 1000, cpu, n, $3 + $4
  }'
done
echo
echo "$(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)); wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, same machine; $(go version | cut -d' ' -f3)"
