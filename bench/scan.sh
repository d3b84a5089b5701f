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
#
# authwatch matches on every core and grep and ripgrep on one, so the CPU
# seconds column shows the work apart from the wall time. The header line
# gives the load average: on a machine shared with other work, the wall
# time of authwatch suffers most, because it needs all cores.
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib=${1:-1024}
authwatch=${AUTHWATCH:-bin/authwatch}
dir=${BENCH_DIR:-/tmp/authwatch-bench}
runs=${RUNS:-3}
log="$dir/scan-${size_mib}m.log"

for tool in python3 grep rg wc bc /usr/bin/time; do
	command -v "$tool" >/dev/null || { echo "bench/scan.sh: $tool not found; install it (Debian's ripgrep, bc and time packages)" >&2; exit 2; }
done
[[ -x $authwatch ]] || { echo "bench/scan.sh: $authwatch not found; run make build" >&2; exit 2; }

mkdir -p "$dir"
if [[ ! -f $log || $(stat -c %s "$log") -ne $((size_mib << 20)) ]]; then
	echo "generating $log ($size_mib MiB)" >&2
	python3 bench/genlog.py "$size_mib" >"$log"
fi
cat "$log" >/dev/null

# best_of CMD... runs the command RUNS times and prints the fastest wall
# time in seconds, the CPU time (user + system) of that run and the output
# of the last run (a line count). The commands below write their CPU time
# to $cpu_file with /usr/bin/time.
cpu_file="$dir/cpu-seconds"
best_of() {
	local best="" best_cpu="" out t0 t1 secs
	for ((i = 0; i < runs; i++)); do
		t0=$(date +%s.%N)
		out=$("$@")
		t1=$(date +%s.%N)
		secs=$(echo "$t1 - $t0" | bc -l)
		if [[ -z $best ]] || (($(echo "$secs < $best" | bc -l))); then
			best=$secs
			best_cpu=$(awk 'END { print $1 + $2 }' "$cpu_file")
		fi
	done
	printf '%.3f %.2f %s\n' "$best" "$best_cpu" "$out"
}

timed() { /usr/bin/time -o "$cpu_file" -f '%U %S' "$@"; }
aw() { timed "$authwatch" scan --summary=false --progress=never "$log" | wc -l; }
gr() { LC_ALL=C timed grep -E "(ERROR|Auth|401)" "$log" | wc -l; }
rgp() { timed rg --no-filename "(ERROR|Auth|401)" "$log" | wc -l; }

read -r t_aw c_aw n_aw < <(best_of aw)
read -r t_gr c_gr n_gr < <(best_of gr)
read -r t_rg c_rg n_rg < <(best_of rgp)

mibs() { printf '%.0f' "$(echo "$size_mib / $1" | bc -l)"; }
ratio() { printf '%.2f' "$(echo "$t_gr / $1" | bc -l)"; }

echo "file: $log ($size_mib MiB, $(wc -l <"$log") lines), fastest of $runs runs, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| command | seconds | MiB/s | throughput vs grep | CPU seconds | lines printed |"
echo "|---|---:|---:|---:|---:|---:|"
echo "| \`authwatch scan\` (default pack) | $t_aw | $(mibs "$t_aw") | $(ratio "$t_aw") | $c_aw | $n_aw |"
echo "| \`LC_ALL=C grep -E \"(ERROR\\|Auth\\|401)\"\` | $t_gr | $(mibs "$t_gr") | 1.00 | $c_gr | $n_gr |"
echo "| \`rg \"(ERROR\\|Auth\\|401)\"\` | $t_rg | $(mibs "$t_rg") | $(ratio "$t_rg") | $c_rg | $n_rg |"
