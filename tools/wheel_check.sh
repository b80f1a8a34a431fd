#!/usr/bin/env bash
# The wheel path, end to end, as a user gets it: build the sdist, build a
# wheel from that sdist (not from the checkout) for every CPython 3.10-3.13
# found, in a fresh venv that has none of the build requirements, check them
# (twine check, check-wheel-contents, auditwheel show on Linux, no debug
# sections), install each wheel into that venv and run the test suite that
# the sdist ships from a directory outside any source tree; then build
# examples/downstream with --find-links to that wheel, and install the sdist
# once more without build isolation in a venv given the build requirements.
#
#     bash tools/wheel_check.sh                      # every 3.10-3.13 found
#     PYTHONS="3.12" bash tools/wheel_check.sh       # just these
#     PYTEST_ARGS="-x" bash tools/wheel_check.sh     # extra pytest arguments
#
# Pythons come from pyenv when it is there (its newest 3.x.y of each), else
# from python3.x on PATH (e.g. actions/setup-python with several versions).
# Quiet: one line per step; a log only when its step fails.  A failing test
# suite is reported and the other Pythons still run; the exit code says.
# The whole script is one function, read before it runs, so editing this file
# cannot change a run in progress.
set -euo pipefail

main() {
    cd "$(dirname "$0")/.."
    if ! grep -qs '^name = "crnn"' pyproject.toml; then
        echo "$0 must be in tools/ of a crnn checkout" >&2
        exit 1
    fi
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    mkdir -p "$scratch/dist" "$scratch/logs"

    local pythons=() version python
    for version in ${PYTHONS:-3.10 3.11 3.12 3.13}; do
        python=$(find_python "$version")
        if [ -n "$python" ]; then
            pythons+=("$python")
        else
            echo "no Python $version here: skipped"
        fi
    done
    if [ "${#pythons[@]}" -eq 0 ]; then
        echo "no Python 3.10-3.13 found" >&2
        exit 1
    fi

    # The checking tools, in a venv of their own.
    run tools-venv "${pythons[${#pythons[@]}-1]}" -m venv "$scratch/tools"
    tools="$scratch/tools/bin"
    run tools-install "$tools/python" -m pip install --quiet \
        build twine check-wheel-contents auditwheel

    build_sdist

    local summary=() failed=0
    for python in "${pythons[@]}"; do
        check_python "$python"
        summary+=("$tag:${size_kib}KiB:tests-$verdict")
        [ "$verdict" = ok ] || failed=1
    done
    if [ "$failed" -ne 0 ]; then
        echo "wheel path FAILED: ${summary[*]}"
        exit 1
    fi
    echo "wheel path ok: ${summary[*]}"
}

# run LOG COMMAND...: the command's output goes to LOG, shown if it fails.
run() {
    local log="$scratch/logs/$1"
    shift
    if ! "$@" >"$log" 2>&1; then
        echo "FAILED: $*" >&2
        tail -n 60 "$log" >&2
        exit 1
    fi
}

# find_python 3.12: the path of a CPython 3.12, or nothing.
find_python() {
    local version=$1 newest
    if command -v pyenv >/dev/null 2>&1; then
        newest=$(find "$(pyenv root)/versions" -maxdepth 1 -name "$version.*" \
                     -printf '%f\n' 2>/dev/null | grep -E "^$version\.[0-9]+$" \
                 | sort -t. -k3,3n | tail -n 1 || true)
        if [ -n "$newest" ]; then
            echo "$(pyenv root)/versions/$newest/bin/python"
            return
        fi
    fi
    command -v "python$version" 2>/dev/null || true
}

# build_sdist: $sdist, checked, and $scratch/suite, a test directory outside
# every source tree holding the sdist's tests and downstream example.
build_sdist() {
    # From a copy of the files git would commit (tracked, or untracked and
    # not ignored), less deleted files and any virtual environment left in
    # the tree (a directory holding a pyvenv.cfg, such as .ci/venv).  Building
    # in the work tree itself would leave .c files cythonized against the
    # build env's numpy in src/, for the next in-place build to trip on.
    local source="$scratch/source" file venv venvs=()
    mkdir -p "$source"
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -z --cached --others --exclude-standard >"$scratch/listed"
        while IFS= read -r -d '' file; do
            if [ "$(basename "$file")" = pyvenv.cfg ]; then
                venvs+=("$(dirname "$file")/")
            fi
        done <"$scratch/listed"
        while IFS= read -r -d '' file; do
            [ -e "$file" ] || continue
            for venv in "${venvs[@]}"; do
                [[ $file == "$venv"* ]] && continue 2
            done
            printf '%s\0' "$file"
        done <"$scratch/listed" >"$scratch/files"
        tar --null -T "$scratch/files" -cf - | tar -C "$source" -xf -
    else
        tar --exclude=./build --exclude=./dist --exclude='*.egg-info' \
            --exclude='*.so' --exclude='*.pyd' --exclude='./src/crnn/*.c' \
            --exclude=__pycache__ -cf - . | tar -C "$source" -xf -
    fi
    run sdist "$tools/python" -m build --sdist --outdir "$scratch/dist" "$source"
    sdist=$(echo "$scratch"/dist/crnn-*.tar.gz)
    run twine-sdist "$tools/twine" check --strict "$sdist"
    echo "sdist  $(basename "$sdist")  $(du -k "$sdist" | cut -f1) KiB  (twine check: ok)"

    mkdir -p "$scratch/unpacked"
    tar -xzf "$sdist" -C "$scratch/unpacked"
    local unpacked required
    unpacked=$(echo "$scratch"/unpacked/crnn-*)
    for required in src/crnn/api.pxd src/crnn/api.pyx tests/test_capi.py \
                    src/crnn/crnn.h tests/test_c_header.py \
                    examples/downstream/crnn_downstream.pyx \
                    examples/downstream_c/crnn_downstream_c.c \
                    examples/seq2seq.py src/crnn/_vendor/threadpoolctl.LICENSE; do
        if [ ! -e "$unpacked/$required" ]; then
            echo "the sdist lacks $required" >&2
            exit 1
        fi
    done
    mkdir -p "$scratch/suite/examples"
    cp -r "$unpacked/tests" "$scratch/suite/tests"
    cp -r "$unpacked/examples/downstream" "$scratch/suite/examples/downstream"
    cp -r "$unpacked/examples/downstream_c" "$scratch/suite/examples/downstream_c"
    cp "$unpacked/examples/seq2seq.py" "$scratch/suite/examples/seq2seq.py"
}

# check_python PYTHON: build the wheel from the sdist, check it, test it;
# build the downstream example against it; install the sdist once more
# without build isolation.  Sets $tag, $size_kib and $verdict (ok or FAILED,
# the test suite's).
check_python() {
    local python=$1 wheel platform module venv result so_kib
    tag=$("$python" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
    # The wheel is built by a fresh venv's pip, which holds none of the
    # build requirements: build isolation must fetch every one of them.
    venv="$scratch/venv-$tag"
    run "venv-$tag" "$python" -m venv "$venv"
    run "wheel-$tag" "$venv/bin/python" -m pip wheel --no-deps \
        --wheel-dir "$scratch/wheels/$tag" "$sdist"
    wheel=$(echo "$scratch/wheels/$tag"/crnn-*.whl)
    size_kib=$(du -k "$wheel" | cut -f1)

    run "twine-$tag" "$tools/twine" check --strict "$wheel"
    run "contents-$tag" "$tools/check-wheel-contents" "$wheel"
    platform="(auditwheel: Linux only)"
    if [ "$(uname -s)" = Linux ]; then
        run "auditwheel-$tag" "$tools/auditwheel" show "$wheel"
        # "... is consistent with the following platform tag: "manylinux_..."."
        platform=$(tr -s ' \n' ' ' <"$scratch/logs/auditwheel-$tag" \
                   | grep -o 'platform tag: "[^"]*"' | head -n 1 | cut -d'"' -f2 || true)
    fi

    # No debug information: no .debug_* section in any extension module.
    "$tools/python" -m zipfile -e "$wheel" "$scratch/unzipped/$tag"
    if command -v readelf >/dev/null 2>&1; then
        while IFS= read -r module; do
            if readelf -S --wide "$module" | grep -q '\.debug_'; then
                echo "$(basename "$module") in $(basename "$wheel") has debug sections" >&2
                exit 1
            fi
        done < <(find "$scratch/unzipped/$tag" -name '*.so')
    fi
    so_kib=$(find "$scratch/unzipped/$tag" \( -name '*.so' -o -name '*.pyd' \) \
                 -exec du -ck {} + | tail -n 1 | cut -f1)

    # the [test] extra (pytest, Cython, setuptools), as cibuildwheel's test-extras
    run "install-$tag" "$venv/bin/python" -m pip install --quiet "${wheel}[test]"
    # From the suite directory, crnn can only come from the venv.
    local pytest_args=()
    read -r -a pytest_args <<<"${PYTEST_ARGS:-}"
    verdict=ok
    if ! (cd "$scratch/suite" && "$venv/bin/python" -m pytest -q -rs -p no:cacheprovider \
              "${pytest_args[@]}" tests >"$scratch/logs/pytest-$tag" 2>&1); then
        verdict=FAILED
        grep -E '^(FAILED|ERROR) ' "$scratch/logs/pytest-$tag" | head -n 20 >&2 \
            || tail -n 40 "$scratch/logs/pytest-$tag" >&2
    fi
    result=$(tail -n 1 "$scratch/logs/pytest-$tag" | sed 's/=//g; s/^ *//; s/ *$//')
    echo "$tag    $(basename "$wheel")  ${size_kib} KiB (extension modules ${so_kib} KiB unpacked)  $platform"
    echo "         twine check, check-wheel-contents, auditwheel show, no debug sections: ok"
    echo "         tests from the installed wheel: $verdict ($result)"
    check_downstream "$venv"
    check_no_isolation "$python"
    # Why tests skipped (e.g. no torch here), most frequent first.
    sed -n 's/^SKIPPED \[\([0-9]*\)\] [^:]*:[0-9]*: /\1 /p' "$scratch/logs/pytest-$tag" \
        | awk '{n = $1; $1 = ""; count[substr($0, 2)] += n}
               END {for (r in count) printf "%d\t%s\n", count[r], r}' \
        | sort -rn | head -n 5 | sed 's/^/         skipped /; s/\t/: /'
}

# check_downstream VENV: examples/downstream names crnn as a build
# requirement.  Before crnn is on PyPI, a user builds it with --find-links to
# a folder holding a crnn wheel; pip's isolated build environment must take
# crnn from there.  Then the extension runs against the installed crnn.
check_downstream() {
    local venv=$1
    run "downstream-$tag" "$venv/bin/python" -m pip install --quiet \
        --find-links "$scratch/wheels/$tag" "$scratch/suite/examples/downstream"
    run "downstream-run-$tag" "$venv/bin/python" -c '
import numpy as np, crnn, crnn_downstream as d
m = crnn.LSTM(3, 5, output=None, dtype="float64", seed=0); p = m.params
x = np.random.default_rng(0).normal(size=(6, 2, 3))
hs = d.lstm_forward(x, p["U0"], p["W0"], p["b0"])[1:].transpose(1, 0, 2)
assert np.abs(hs - m.forward(x.transpose(1, 0, 2))).max() < 1e-12'
    echo "         examples/downstream built with --find-links to the wheel: ok"
}

# check_no_isolation PYTHON: the sdist installs with --no-build-isolation
# into a venv given exactly the declared build requirements (as packagers
# build), and the installed crnn runs.
check_no_isolation() {
    local python=$1 venv="$scratch/venv-noiso-$tag" requires=()
    mapfile -t requires < <("$tools/python" - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))
PY
)
    run "venv-noiso-$tag" "$python" -m venv "$venv"
    run "requires-noiso-$tag" "$venv/bin/python" -m pip install --quiet "${requires[@]}"
    run "install-noiso-$tag" "$venv/bin/python" -m pip install --quiet \
        --no-build-isolation --no-deps "$sdist"
    run "run-noiso-$tag" "$venv/bin/python" -c '
import numpy as np, crnn
m = crnn.LSTM(3, 4, seed=0)
assert np.isfinite(m.predict_proba(np.zeros((2, 5, 3)))).all()'
    echo "         sdist installed without build isolation (${requires[*]}): ok"
}

main "$@"; exit
