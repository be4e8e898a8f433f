#!/bin/sh
# fuzz.sh: runs or merges the libFuzzer targets built in $FUZZ_BUILD
# (default build-fuzz; `make fuzz` builds them).  See docs/fuzzing.md.
#
#   scripts/fuzz.sh run [TARGET...]    fuzz each target for $FUZZ_SECONDS
#                                      (default 20); new inputs go to
#                                      $FUZZ_BUILD/corpus/TARGET, crashes to
#                                      $FUZZ_BUILD/artifacts/; exit 1 on any
#                                      (after replaying fuzz/regressions/TARGET)
#   scripts/fuzz.sh merge [TARGET...]  merge $FUZZ_BUILD/corpus/TARGET into
#                                      the committed seeds, fuzz/corpus/TARGET
#
# The image target also reads the sample photos under
# $FACEVERIFY_DATA/samples as extra seeds when they exist (never copied into
# fuzz/corpus: only inputs that libFuzzer derives and that add coverage are
# merged, truncated to -max_len).
set -eu
cd "$(dirname "$0")/.."
mode=${1:-run}
[ $# -gt 0 ] && shift
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
targets=${*:-fuzz_image fuzz_model fuzz_multipart fuzz_json}
status=0
for t in $targets; do
    bin=$FUZZ_BUILD/bin/$t
    [ -x "$bin" ] || { echo "fuzz.sh: $bin not built (make fuzz)" >&2; exit 2; }
    new=$FUZZ_BUILD/corpus/$t
    mkdir -p "$new" "$FUZZ_BUILD/artifacts" "fuzz/corpus/$t"
    case $t in
    fuzz_image) maxlen=65536 ;;
    *) maxlen=16384 ;;
    esac
    if [ "$mode" = merge ]; then
        "$bin" -merge=1 -max_len=$maxlen "fuzz/corpus/$t" "$new" 2>&1 | grep -E "MERGE-OUTER: [0-9]+ new files" || true
        continue
    fi
    # Inputs that once failed (fuzz/regressions/TARGET/) must pass first.
    if [ -d "fuzz/regressions/$t" ] && ! "$bin" -runs=0 "fuzz/regressions/$t" \
        >"$FUZZ_BUILD/$t.regressions.log" 2>&1; then
        echo "$t: a regression input fails again (see $FUZZ_BUILD/$t.regressions.log)" >&2
        status=1
        continue
    fi
    extra=""
    if [ "$t" = fuzz_image ] && [ -d "${FACEVERIFY_DATA:-../shared/data}/samples" ]; then
        extra="${FACEVERIFY_DATA:-../shared/data}/samples"
    fi
    log=$FUZZ_BUILD/$t.log
    # shellcheck disable=SC2086 # extra is one path or nothing
    if "$bin" -max_total_time="$FUZZ_SECONDS" -max_len=$maxlen -timeout=20 -rss_limit_mb=2560 \
        -print_final_stats=1 -artifact_prefix="$FUZZ_BUILD/artifacts/$t-" \
        "$new" "fuzz/corpus/$t" $extra >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        cov=$(grep -E "^#[0-9]+[[:space:]]+DONE" "$log" | sed 's/.*cov: \([0-9]*\).*/\1/')
        echo "$t: ok, $runs executions in ${FUZZ_SECONDS}s, coverage $cov edges"
    else
        echo "$t: FAILED (see $log and $FUZZ_BUILD/artifacts/)" >&2
        tail -40 "$log" >&2
        status=1
    fi
done
exit $status
