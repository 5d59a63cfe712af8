#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, build-fuzz/) and runs each one for SECONDS (default 30)
# over its seed corpus tests/fuzz/corpus/<name>. New inputs go to a temporary directory, so the
# committed corpus does not grow; crash inputs go to $FUZZ_ARTIFACTS (default
# build-fuzz/fuzz-artifacts). Exits non-zero if any target crashes, leaks, times out or OOMs.
#
#   scripts/fuzz.sh [SECONDS]       env: BUILD_DIR, JOBS (build parallelism, default 2),
#                                        FUZZ_TARGETS ("fuzz_smtp_cmd fuzz_smtp_data", default all)
set -euo pipefail

secs=${1:-30}
case $secs in
'' | *[!0-9]*)
	echo "usage: $0 [SECONDS]" >&2
	exit 2
	;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build-fuzz}
jobs=${JOBS:-2}
artifacts=${FUZZ_ARTIFACTS:-$build/fuzz-artifacts}

if [ -n "${FUZZ_TARGETS:-}" ]; then
	read -r -a targets <<<"$FUZZ_TARGETS"
else
	targets=()
	for src in "$root"/tests/fuzz/fuzz_*.c; do
		[ -e "$src" ] || continue
		targets+=("$(basename "$src" .c)")
	done
fi
if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz: no targets in tests/fuzz" >&2
	exit 2
fi

echo "fuzz: building ${targets[*]} in $build"
CC=${CC:-clang} cmake -S "$root" -B "$build" -DFUZZ=ON >/dev/null
cmake --build "$build" -j"$jobs" --target "${targets[@]}"

work=$(mktemp -d "${TMPDIR:-/tmp}/mb-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$artifacts"

failed=()
for t in "${targets[@]}"; do
	bin=$build/tests/fuzz/$t
	corpus=$root/tests/fuzz/corpus/${t#fuzz_}
	new=$work/$t
	log=$work/$t.log
	mkdir -p "$new"
	dirs=("$new")
	[ -d "$corpus" ] && dirs+=("$corpus")

	echo "fuzz: $t for ${secs}s (corpus ${corpus#"$root"/})"
	rc=0
	"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
		-print_final_stats=1 -artifact_prefix="$artifacts/$t-" "${dirs[@]}" >"$log" 2>&1 ||
		rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1 || true)
	if [ "$rc" -ne 0 ]; then
		echo "fuzz: $t FAILED (exit $rc) after ${execs:-?} execs; log tail:"
		tail -n 40 "$log"
		ls -1 "$artifacts"/"$t"-* 2>/dev/null | sed 's/^/fuzz: artifact: /' || true
		failed+=("$t")
	else
		echo "fuzz: $t ok: ${execs:-?} execs, ${cov:-cov: ?}, $(find "$new" -type f | wc -l) new inputs"
	fi
done

if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: failed: ${failed[*]}" >&2
	exit 1
fi
echo "fuzz: all ${#targets[@]} targets ok"
