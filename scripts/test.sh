#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is needed,
# builds (plain, sanitized, fuzzing), runs every suite and ends with the line
#   N passed, N failed, N skipped
# Suites: unit (also under ASan+UBSan), guests (tiny self-checking guests on
# this host's /dev/kvm), interop (qemu-img as oracle), fuzz (libFuzzer,
# briefly), nested (real Linux one level down; TERN_SKIP_NESTED=1 skips it).
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0 failed=0 skipped=0
failures=()

scripts/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
if ! ASAN=1 FUZZ=1 scripts/build.sh; then
	echo "build failed"
	echo "0 passed, 1 failed"
	exit 1
fi

# Runs `meson test` in a build dir and adds its results to the totals.
run_meson() {
	local label=$1 dir=$2; shift 2
	echo "=== $label"
	meson test -C "$dir" --no-rebuild --print-errorlogs "$@"
	local log="$dir/meson-logs/testlog.json"
	[ -f "$log" ] || { failed=$((failed + 1)); failures+=("$label: no test log"); return; }
	local counts
	counts=$(python3 - "$log" "$label" <<'PY'
import json, sys
p = f = s = 0
names = []
for line in open(sys.argv[1]):
    t = json.loads(line)
    r = t.get("result")
    if r in ("OK", "EXPECTEDFAIL"):
        p += 1
    elif r == "SKIP":
        s += 1
    else:
        f += 1
        names.append(sys.argv[2] + ":" + t["name"])
print(p, f, s, " ".join(names))
PY
)
	read -r p f s names <<<"$counts"
	passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
	[ -n "${names:-}" ] && failures+=($names)
}

run_meson "unit, guests, interop" build --no-suite nested --no-suite fuzz
run_meson "unit under ASan+UBSan" build-asan --suite unit
run_meson "fuzz (brief)" build-fuzz --suite fuzz

# The nested suite boots one outer QEMU machine and runs every test in
# tests/nested/tests inside it; its runner ends with "N passed, N failed,
# N skipped", which is added to the totals.
if [ "${TERN_SKIP_NESTED:-0}" != 1 ]; then
	echo "=== nested (real Linux inside QEMU TCG with nested SVM)"
	out=$(mktemp)
	# a generous overall limit: a test that hangs fails alone instead of the
	# whole nested run being cut off
	tests/nested/run.sh --tern build/src/cmd/tern --timeout 2700 ${TERN_NESTED_TESTS:-} 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	line=$(grep -aE '^[0-9]+ passed, [0-9]+ failed' "$out" | tail -n1)
	if [ -n "$line" ]; then
		read -r np _ nf _ ns _ <<<"${line//,/}"
		passed=$((passed + np)); failed=$((failed + nf)); skipped=$((skipped + ${ns:-0}))
		[ "$nf" -gt 0 ] && failures+=("nested: $nf failed")
	else
		failed=$((failed + 1)); failures+=("nested: no summary (rc $rc)")
	fi
	rm -f "$out"
fi

if [ ${#failures[@]} -gt 0 ]; then
	echo "failed: ${failures[*]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
