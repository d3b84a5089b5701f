#!/usr/bin/env bash
# Compare the throughput of `authwatch scan` (full default pack) with the
# grep that people use today and with ripgrep, on one generated log file.
#
# Usage: bench/scan.sh [SIZE_MIB]   (default 1024, that is 1 GiB)
# Environment: AUTHWATCH (binary, default bin/authwatch), BENCH_DIR (where
# the log is kept between runs, default /tmp/authwatch-bench), RUNS (timed
# runs per command, default 3; the fastest counts).
#
# Every command writes its matches to a pipe (wc -l): GNU grep stops at the
# first match when its output is /dev/null, which would flatter it. The file
# is read once before timing so that all commands see it in the page cache.
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib=${1:-1024}
authwatch=${AUTHWATCH:-bin/authwatch}
dir=${BENCH_DIR:-/tmp/authwatch-bench}
runs=${RUNS:-3}
log="$dir/scan-${size_mib}m.log"

for tool in python3 grep rg wc; do
	command -v "$tool" >/dev/null || { echo "bench/scan.sh: $tool not found; install it (ripgrep is Debian's ripgrep package)" >&2; exit 2; }
done
[[ -x $authwatch ]] || { echo "bench/scan.sh: $authwatch not found; run make build" >&2; exit 2; }

mkdir -p "$dir"
if [[ ! -f $log || $(stat -c %s "$log") -ne $((size_mib << 20)) ]]; then
	echo "generating $log ($size_mib MiB)" >&2
	python3 bench/genlog.py "$size_mib" >"$log"
fi
cat "$log" >/dev/null

# best_of CMD... runs the command RUNS times and prints the fastest wall
# time in seconds and the output of the last run (a line count).
best_of() {
	local best="" out t0 t1 secs
	for ((i = 0; i < runs; i++)); do
		t0=$(date +%s.%N)
		out=$("$@")
		t1=$(date +%s.%N)
		secs=$(echo "$t1 - $t0" | bc -l)
		if [[ -z $best ]] || (($(echo "$secs < $best" | bc -l))); then
			best=$secs
		fi
	done
	printf '%.3f %s\n' "$best" "$out"
}

aw() { "$authwatch" scan --summary=false --progress=never "$log" | wc -l; }
gr() { LC_ALL=C grep -E "(ERROR|Auth|401)" "$log" | wc -l; }
rgp() { rg --no-filename "(ERROR|Auth|401)" "$log" | wc -l; }

read -r t_aw n_aw < <(best_of aw)
read -r t_gr n_gr < <(best_of gr)
read -r t_rg n_rg < <(best_of rgp)

mibs() { printf '%.0f' "$(echo "$size_mib / $1" | bc -l)"; }
ratio() { printf '%.2f' "$(echo "$t_gr / $1" | bc -l)"; }

echo "file: $log ($size_mib MiB, $(wc -l <"$log") lines), fastest of $runs runs, $(nproc) cores"
echo
echo "| command | seconds | MiB/s | throughput vs grep | lines printed |"
echo "|---|---:|---:|---:|---:|"
echo "| \`authwatch scan\` (default pack) | $t_aw | $(mibs "$t_aw") | $(ratio "$t_aw") | $n_aw |"
echo "| \`LC_ALL=C grep -E \"(ERROR\\|Auth\\|401)\"\` | $t_gr | $(mibs "$t_gr") | 1.00 | $n_gr |"
echo "| \`rg \"(ERROR\\|Auth\\|401)\"\` | $t_rg | $(mibs "$t_rg") | $(ratio "$t_rg") | $n_rg |"
