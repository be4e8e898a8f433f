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
# $FACEVERIFY_DATA/samples as extra seeds when they exist, in a second run
# whose new inputs stay in $FUZZ_BUILD/corpus/fuzz_image-photos: they are
# derived from the photos, so they are never merged into fuzz/corpus.
set -eu
cd "$(dirname "$0")/.."
mode=${1:-run}
[ $# -gt 0 ] && shift
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
targets=${*:-fuzz_image fuzz_model fuzz_multipart fuzz_json fuzz_gate}
status=0

# fuzz_once BIN LABEL SECONDS MAXLEN OUTDIR [SEEDDIR...]: one bounded run.
fuzz_once() {
    bin=$1 label=$2 secs=$3 maxlen=$4
    shift 4
    log=$FUZZ_BUILD/$(echo "$label" | tr + -).log
    if "$bin" -max_total_time="$secs" -max_len="$maxlen" -timeout=20 -rss_limit_mb=2560 \
        -print_final_stats=1 -artifact_prefix="$FUZZ_BUILD/artifacts/${label%+*}-" \
        "$@" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        cov=$(grep -E "^#[0-9]+[[:space:]]+DONE" "$log" | sed 's/.*cov: \([0-9]*\).*/\1/')
        echo "$label: ok, $runs executions in ${secs}s, coverage $cov edges"
    else
        echo "$label: FAILED (see $log and $FUZZ_BUILD/artifacts/)" >&2
        tail -40 "$log" >&2
        return 1
    fi
}

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
    # The image target spends half its time on the generated seeds (new
    # inputs: $new, merged by `merge`) and half with the sample photos added
    # ($new-photos, never merged: its inputs are derived from the photos).
    photos="${FACEVERIFY_DATA:-../shared/data}/samples"
    secs=$FUZZ_SECONDS
    if [ "$t" = fuzz_image ] && [ -d "$photos" ]; then
        secs=$(((FUZZ_SECONDS + 1) / 2))
    fi
    fuzz_once "$bin" "$t" "$secs" "$maxlen" "$new" "fuzz/corpus/$t" || status=1
    if [ "$t" = fuzz_image ] && [ -d "$photos" ]; then
        mkdir -p "$new-photos"
        fuzz_once "$bin" "$t+photos" "$secs" "$maxlen" "$new-photos" "$new" "fuzz/corpus/$t" \
            "$photos" || status=1
    fi
done
exit $status
