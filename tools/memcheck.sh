#!/usr/bin/env bash
# Memory safety check for crnn's compiled code (issue 9, item 3).
#
#   tools/memcheck.sh [pytest args...]
#
# 1. AddressSanitizer: copies the source tree to a temporary directory,
#    builds every extension there with -fsanitize=address (and symbols), and
#    runs the test suite against that build with libasan preloaded into an
#    uninstrumented Python.  Fails on any ASan report whose stack passes
#    through crnn's code (heap/stack/global buffer overflow, use after free,
#    double free, ...), and on any test failure.  Reports from elsewhere
#    (CPython, numpy, OpenBLAS) are printed but do not fail the check.
# 2. Valgrind memcheck (when valgrind is installed; MEMCHECK_VALGRIND=0 skips
#    it): ASan does not see reads of uninitialised memory, memcheck does.  A
#    short script (tools/memcheck_exercise.py) drives every cell, option and
#    entry point once on a plain -O1 -g build; fails on any memcheck error
#    (invalid read/write, use of uninitialised values, bad free) whose
#    innermost frame outside libc's string functions is in crnn's code.
#
# Nothing outside the temporary directory is touched: the editable install
# and src/crnn/*.so stay as they are.
#
# Environment:
#   PYTHON             the interpreter (default: python3); it needs numpy,
#                      scipy, Cython, setuptools and pytest (hypothesis for
#                      tests/test_properties.py, skipped without it)
#   CC                 a GCC or Clang that has libasan (default: gcc)
#   MEMCHECK_TESTS     the test files to run under ASan (default: the whole
#                      suite minus torch/ONNX/CLI and timing-sensitive files)
#   MEMCHECK_ASAN      0 to skip the ASan phase
#   MEMCHECK_VALGRIND  0 to skip the valgrind phase
#   MEMCHECK_KEEP      1 to keep the temporary directory
#   MEMCHECK_SELFTEST  1 to check the checker: an off-by-one read is planted
#                      in the copy's stream code, and the check must fail on
#                      it (run with MEMCHECK_TESTS=tests/test_stream.py)
#
# Exit status: 0 clean, 1 a memory error in crnn (or a failing test), 2 the
# check could not run (no libasan, build failure).
set -u -o pipefail

PYTHON=${PYTHON:-python3}
CC=${CC:-gcc}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/crnn-memcheck.XXXXXX")
cleanup() {
    if [ "${MEMCHECK_KEEP:-0}" = 1 ]; then
        echo "memcheck: kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

say() { printf '\n== memcheck: %s\n' "$*"; }
die() { echo "memcheck: $*" >&2; exit 2; }

LIBASAN=$("$CC" -print-file-name=libasan.so)
[ -e "$LIBASAN" ] || die "$CC has no libasan.so (install libasan / gcc's sanitizer runtime)"
LIBASAN=$(readlink -f "$LIBASAN")
"$PYTHON" -c "import numpy, scipy, Cython, setuptools, pytest" ||
    die "$PYTHON needs numpy, scipy, Cython, setuptools and pytest"

# ------------------------------------------------------------------ a private copy
copy_tree() {    # copy_tree DEST: the sources, without built files
    mkdir -p "$1"
    # (the .c files Cython generated are left out; the hand-written C of
    # tests/c and examples/downstream_c is copied)
    (cd "$ROOT" && tar cf - --exclude='*.so' --exclude='*.pyd' --exclude='src/crnn/*.c' \
        --exclude='examples/downstream/*.c' \
        --exclude=build --exclude='*.egg-info' --exclude=__pycache__ \
        setup.py pyproject.toml README.md MANIFEST.in src tests examples 2>/dev/null) |
        (cd "$1" && tar xf -)
    [ -f "$1/setup.py" ] && [ -d "$1/src/crnn" ] || die "could not copy the sources to $1"
    # Keep symbols and frame pointers for readable reports: the release
    # build's -g0 (which would override CFLAGS' -g) and -s (strip) go.
    "$PYTHON" - "$1/setup.py" <<'EOF'
import re, sys
path = sys.argv[1]
text = open(path).read()
text = text.replace('"-g0"', '"-g"').replace('["-s"]', '[]').replace('"-O3"', '"-O1"')
open(path, "w").write(text)
EOF
}

build() {    # build DIR CFLAGS LDFLAGS
    say "building $(basename "$1") (CFLAGS=$2)"
    (cd "$1" && CC="$CC" CFLAGS="$2" LDFLAGS="$3" "$PYTHON" setup.py build_ext --inplace -q \
        >"$1.build.log" 2>&1) || { tail -40 "$1.build.log"; die "build failed (log above)"; }
}

# ------------------------------------------------------------------ 1. AddressSanitizer
plant_bug() {    # plant_bug DIR: the stream's output bias copy reads one element past c
    "$PYTHON" - "$1/src/crnn/_stream.pyx" <<'EOF'
import sys
path = sys.argv[1]
text = open(path).read()
old = "memcpy(out + row * K, c, K * sizeof(floating))"
if old not in text:
    sys.exit("memcheck: cannot plant the self-test bug (stream code changed)")
open(path, "w").write(text.replace(old, "memcpy(out + row * K, c, (K + 1) * sizeof(floating))"))
EOF
}

asan_phase() {
ASAN_DIR=$WORK/asan
copy_tree "$ASAN_DIR"
if [ "${MEMCHECK_SELFTEST:-0}" = 1 ]; then
    plant_bug "$ASAN_DIR" || exit 2
fi
build "$ASAN_DIR" "-fsanitize=address -fsanitize-recover=address -fno-omit-frame-pointer -g -O1" \
    "-fsanitize=address"
for so in "$ASAN_DIR"/src/crnn/*.so; do
    nm -D "$so" 2>/dev/null | grep __asan_init >/dev/null ||
        die "$(basename "$so") is not instrumented by ASan"
done

# Not under ASan: the tests that run PyTorch or JAX (their own native
# runtimes; jaxlib's C++ exceptions trip ASan's __cxa_throw interceptor),
# and the CLI's subprocesses.
DEFAULT_TESTS=$(cd "$ASAN_DIR" && ls tests/test_*.py | grep -v -E \
    'test_(torch_parity|onnx|interop|cli|vjp_torch|vjp_jax)\.py$' | tr '\n' ' ')
TESTS=${MEMCHECK_TESTS:-$DEFAULT_TESTS}
mkdir -p "$WORK/asan-logs"
# detect_leaks=0: CPython does not free everything at exit.  halt_on_error=0
# (with -fsanitize-recover) collects every report, to be sorted below.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=0:abort_on_error=0:log_path=$WORK/asan-logs/asan:malloc_context_size=30:detect_stack_use_after_return=0:verify_asan_link_order=0"
say "running the tests under ASan: $TESTS"
(
    cd "$ASAN_DIR" &&
    export LD_PRELOAD="$LIBASAN" PYTHONPATH="$ASAN_DIR/src" PYTHONMALLOC=malloc \
        OPENBLAS_NUM_THREADS=2 CRNN_PROPERTY_SCALE=${CRNN_PROPERTY_SCALE:-0.3} &&
    where=$("$PYTHON" -c "import crnn._network as s; print(s.__file__)") &&
    case "$where" in
        "$ASAN_DIR"/*) ;;
        *) echo "memcheck: crnn was imported from $where, not the ASan build" >&2; exit 3 ;;
    esac &&
    "$PYTHON" -m pytest -q -p no:cacheprovider $TESTS "$@"
)
TEST_STATUS=$?
[ $TEST_STATUS = 3 ] && exit 2

CRNN_REPORTS=0
OTHER_REPORTS=0
for log in "$WORK"/asan-logs/asan.*; do
    [ -e "$log" ] || continue
    # one file per process; a frame in crnn's build anywhere in it counts
    count=$(grep -c 'ERROR: AddressSanitizer' "$log")
    if grep -E '(/crnn/|src/crnn/)' "$log" >/dev/null; then
        CRNN_REPORTS=$((CRNN_REPORTS + count))
        say "$count ASan report(s) in crnn's code ($log; the first 150 lines):"
    else
        OTHER_REPORTS=$((OTHER_REPORTS + count))
        say "$count ASan report(s) outside crnn ($log), not counted:"
    fi
    head -n 150 "$log"
done

if [ $CRNN_REPORTS != 0 ]; then
    say "FAILED: $CRNN_REPORTS ASan report(s) in crnn's code"
    exit 1
fi
if [ $TEST_STATUS != 0 ]; then
    say "FAILED: the tests failed under ASan (status $TEST_STATUS)"
    exit 1
fi
say "ASan: clean ($OTHER_REPORTS report(s) outside crnn)"
}

if [ "${MEMCHECK_ASAN:-1}" = 0 ]; then
    say "ASan phase skipped (MEMCHECK_ASAN=0)"
else
    asan_phase "$@"
fi

# ------------------------------------------------------------------ 2. valgrind memcheck
if [ "${MEMCHECK_VALGRIND:-1}" = 0 ]; then
    say "valgrind phase skipped (MEMCHECK_VALGRIND=0)"
    exit 0
fi
if ! command -v valgrind >/dev/null 2>&1; then
    say "valgrind is not installed: uninitialised reads not checked"
    exit 0
fi
VG_DIR=$WORK/valgrind
copy_tree "$VG_DIR"
if [ "${MEMCHECK_SELFTEST:-0}" = 1 ]; then
    plant_bug "$VG_DIR" || exit 2
fi
build "$VG_DIR" "-g -O1 -fno-omit-frame-pointer" ""
say "running tools/memcheck_exercise.py under valgrind memcheck"
(
    cd "$VG_DIR" &&
    PYTHONPATH="$VG_DIR/src" PYTHONMALLOC=malloc OPENBLAS_NUM_THREADS=1 \
        valgrind --tool=memcheck --leak-check=no --error-limit=no --track-origins=yes \
        --num-callers=40 --xml=yes --xml-file="$WORK/valgrind.xml" \
        "$PYTHON" "$ROOT/tools/memcheck_exercise.py" "$VG_DIR/src/crnn"
)
VG_STATUS=$?
"$PYTHON" "$ROOT/tools/memcheck_exercise.py" --report "$WORK/valgrind.xml" "$VG_DIR/src/crnn"
REPORT_STATUS=$?
if [ $REPORT_STATUS != 0 ]; then
    say "FAILED: valgrind found memory errors in crnn's code"
    exit 1
fi
if [ $VG_STATUS != 0 ]; then
    say "FAILED: the exercise script failed under valgrind (status $VG_STATUS)"
    exit 1
fi
say "valgrind: clean"
exit 0
