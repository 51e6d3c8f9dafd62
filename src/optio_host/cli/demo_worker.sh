#!/bin/sh
# optio-host demo worker: speaks the log protocol from plain POSIX sh, so it runs on any
# host, with or without optio-host installed. `optio-host demo` uploads it to a fresh
# workdir and runs it there with OPTIO_LOG pointing at the session's log.
#
# The protocol: append one line per event to the log, each with a single write (>>):
#   STATUS: [N% ]text     DELIVERABLE: path     DONE[: summary]     ERROR[: message]
set -u

log=${OPTIO_LOG:-optio.log}
out=deliverables

say() { printf '%s\n' "$*" >>"$log"; }

pause() {
    # Fractional sleep is common (GNU, BSD, busybox) but not POSIX: fall back to a second.
    sleep 0.3 2>/dev/null || sleep 1
}

fail() {
    say "ERROR: $*"
    exit 1
}

trap 'fail "interrupted by a signal"' TERM INT HUP

mkdir -p "$out" || fail "cannot create $out/"
work=$(mktemp -d "${TMPDIR:-/tmp}/optio-demo.XXXXXX") || fail "cannot create a scratch folder"
trap 'rm -rf "$work"' EXIT

say "STATUS: 0% Demo worker started on $(uname -n) ($(uname -s))"
pause

say "STATUS: 10% Step 1/10: looking at the host"
host_name=$(uname -n)
kernel=$(uname -sr)
cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo "?")
pause

say "STATUS: 20% Step 2/10: generating numbers"
i=1
: >"$work/numbers"
while [ "$i" -le 20 ]; do
    echo "$i" >>"$work/numbers"
    i=$((i + 1))
done
pause

say "STATUS: 30% Step 3/10: computing squares and cubes"
printf 'n,square,cube\n' >"$work/data.csv"
while read -r n; do
    printf '%s,%s,%s\n' "$n" $((n * n)) $((n * n * n)) >>"$work/data.csv"
done <"$work/numbers"
pause

say "STATUS: 40% Step 4/10: summing up"
total=0
squares=0
while read -r n; do
    total=$((total + n))
    squares=$((squares + n * n))
done <"$work/numbers"
pause

say "STATUS: 50% Step 5/10: handing over data.csv"
cp "$work/data.csv" "$out/data.csv" || fail "cannot write $out/data.csv"
say "DELIVERABLE: $out/data.csv"
pause

say "STATUS: 60% Step 6/10: checking the workdir"
workdir=$(pwd)
free_kb=$(df -Pk . 2>/dev/null | awk 'NR == 2 { print $4 }')
pause

say "STATUS: 70% Step 7/10: writing the report"
{
    echo "optio-host demo report"
    echo "======================"
    echo "host:        $host_name"
    echo "kernel:      $kernel"
    echo "cpus:        $cpus"
    echo "workdir:     $workdir"
    echo "free space:  ${free_kb:-?} KiB"
    echo "sum 1..20:   $total"
    echo "sum squares: $squares"
} >"$work/report.txt"
pause

say "STATUS: 80% Step 8/10: handing over report.txt"
cp "$work/report.txt" "$out/report.txt" || fail "cannot write $out/report.txt"
say "DELIVERABLE: $out/report.txt"
pause

say "STATUS: 85% drawing chart.png"
# A binary deliverable: a bar chart of the squares, drawn by the host's python3 (standard library
# only) when it has one; a host without python3 simply hands over one file fewer.
chart=0
if command -v python3 >/dev/null 2>&1 && python3 _demo_chart.py "$work/data.csv" square "$out/chart.png"; then
    say "DELIVERABLE: $out/chart.png"
    chart=1
else
    say "STATUS: 85% no python3 on this host: skipping the chart"
fi

say "STATUS: 90% Step 9/10: writing summary.json"
mkdir -p "$out/meta"
printf '{"numbers": 20, "sum": %s, "sum_of_squares": %s}\n' "$total" "$squares" >"$out/meta/summary.json"
say "DELIVERABLE: $out/meta/summary.json"
pause

say "STATUS: 100% Step 10/10: finished"
say "DONE: demo finished on $host_name: $((3 + chart)) deliverables"
