#!/usr/bin/env bash
# Measure `authwatch run` against the API server stand-in: STREAMS pods
# writing RATE lines per second in total for SECONDS, all followed at
# once. Prints CPU seconds per million lines, average cores, peak RSS and
# the written→counted lag p50/p99, from /proc and from authwatch's own
# /metrics.
#
# Usage: bench/watch.sh [STREAMS [RATE [SECONDS]]]   (default 500 50000 60)
# Environment: AUTHWATCH (binary, default bin/authwatch), BENCH_DIR (work
# files, default /tmp/authwatch-bench-watch), PORT (metrics port, 19090).
#
# The stand-in runs on the same machine and competes for the same cores;
# its own CPU time is printed too, so the numbers can be read in context.
set -euo pipefail
cd "$(dirname "$0")/.."

streams=${1:-500}
rate=${2:-50000}
seconds=${3:-60}
authwatch=${AUTHWATCH:-bin/authwatch}
dir=${BENCH_DIR:-/tmp/authwatch-bench-watch}
port=${PORT:-19090}
metrics="http://127.0.0.1:$port/metrics"

for tool in curl python3 go; do
	command -v "$tool" >/dev/null || { echo "bench/watch.sh: $tool not found" >&2; exit 2; }
done
[[ -x $authwatch ]] || { echo "bench/watch.sh: $authwatch not found; run make build" >&2; exit 2; }
mkdir -p "$dir"
go build -o "$dir/standin" ./bench/standin

pids=()
# cleanup stops authwatch before the stand-in, so that its final
# checkpoint write still reaches the API.
cleanup() {
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill "${pids[i]}" 2>/dev/null || true
		wait "${pids[i]}" 2>/dev/null || true
	done
}
trap cleanup EXIT

rm -f "$dir/kubeconfig"
"$dir/standin" -streams "$streams" -rate "$rate" -duration $((seconds + 120))s \
	-kubeconfig "$dir/kubeconfig" >"$dir/standin.log" 2>&1 &
standin=$!
pids+=("$standin")
for _ in $(seq 100); do [[ -s $dir/kubeconfig ]] && break; sleep 0.1; done
[[ -s $dir/kubeconfig ]] || { echo "bench/watch.sh: the stand-in did not start; see $dir/standin.log" >&2; exit 1; }

"$authwatch" run --kubeconfig "$dir/kubeconfig" -n bench -l app=load --max-streams $((streams + 100)) \
	--listen-address "127.0.0.1:$port" --checkpoint-namespace bench --log-level warn \
	>"$dir/authwatch.log" 2>&1 &
aw=$!
pids+=("$aw")

# scrape NAME prints the sum of a metric's samples.
scrape() {
	curl -sf "$metrics" | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.0f\n", s }'
}
# cpu PID prints the process's user+system CPU seconds.
cpu() {
	awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / hz }' "/proc/$1/stat"
}

for _ in $(seq 300); do
	[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true) == 200 ]] && break
	sleep 0.1
done
for _ in $(seq 300); do
	[[ $(curl -sf "$metrics" | awk '$1 == "authwatch_streams{state=\"streaming\"}" { print $2 }') == "$streams" ]] && break
	sleep 0.1
done
# Let the first catch-up burst pass before measuring.
sleep 5

curl -sf "$metrics" >"$dir/metrics-start.txt"
lines0=$(scrape authwatch_log_lines_total)
cpu0=$(cpu "$aw")
scpu0=$(cpu "$standin")
sleep "$seconds"
curl -sf "$metrics" >"$dir/metrics-end.txt"
lines1=$(scrape authwatch_log_lines_total)
cpu1=$(cpu "$aw")
scpu1=$(cpu "$standin")
matches=$(scrape authwatch_matches_total)
rss_kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$aw/status")
reconnects=$(scrape authwatch_stream_reconnects_total)
dropped=$(scrape authwatch_log_lines_dropped_total)

python3 - "$dir/metrics-start.txt" "$dir/metrics-end.txt" "$lines0" "$lines1" "$cpu0" "$cpu1" \
	"$scpu0" "$scpu1" "$rss_kib" "$seconds" "$matches" "$reconnects" "$dropped" "$streams" "$rate" <<'PY'
import sys

def buckets(path):
    out = {}
    for line in open(path):
        if line.startswith("authwatch_line_match_lag_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.split()[-1])
    return out

start, end = buckets(sys.argv[1]), buckets(sys.argv[2])
delta = sorted((le, end[le] - start.get(le, 0)) for le in end)
total = delta[-1][1]

def quantile(q):
    # Linear interpolation inside the bucket, as histogram_quantile does.
    rank, prev_le, prev_n = q * total, 0.0, 0.0
    for le, n in delta:
        if n >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_n) / max(n - prev_n, 1)
        prev_le, prev_n = le, n
    return float("nan")

(l0, l1, c0, c1, s0, s1, rss, secs, matches, reconnects, dropped, streams, rate) = sys.argv[3:]
lines = float(l1) - float(l0)
cpu = float(c1) - float(c0)
secs = float(secs)
print(f"streams {streams}, offered {rate} lines/s, measured {secs:.0f} s")
print(f"lines counted        {lines:.0f} ({lines / secs:.0f}/s)")
print(f"authwatch CPU        {cpu:.1f} s = {cpu / secs:.2f} cores, {cpu / lines * 1e6:.2f} CPU s per million lines")
print(f"stand-in CPU         {float(s1) - float(s0):.1f} s = {(float(s1) - float(s0)) / secs:.2f} cores")
print(f"peak RSS             {int(rss) / 1024:.0f} MiB")
print(f"lag written→counted  p50 {quantile(0.5) * 1000:.0f} ms, p99 {quantile(0.99) * 1000:.0f} ms")
print(f"matches {matches}, reconnects {reconnects}, dropped {dropped} (totals since start)")
PY
