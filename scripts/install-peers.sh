#!/bin/sh
# Installs the npm test peers, and Playwright for the browser test (tests/e2e), from their
# committed lockfiles (npm ci), when missing or stale.
# Node.js itself comes from Debian when the machine has none (scripts/install-deps.sh --test).
set -eu
cd "$(dirname "$0")/.."

for dir in tests/peers/*/ tests/e2e/; do
	[ -f "$dir/package-lock.json" ] || continue
	stamp="$dir/node_modules/.mailbridge-lock"
	if [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; then
		continue
	fi
	echo "mailbridge: npm ci in $dir"
	(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
	cp "$dir/package-lock.json" "$stamp"
done
