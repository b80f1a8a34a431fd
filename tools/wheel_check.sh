#!/usr/bin/env bash
# The wheel path, end to end, as a user gets it: build the sdist, build a
# wheel from that sdist (not from the checkout) for every CPython 3.10-3.13
# found, check them (twine check, check-wheel-contents, auditwheel show on
# Linux, no debug sections), install each wheel into a fresh venv and run the
# test suite that the sdist ships from a directory outside any source tree.
#
#     bash tools/wheel_check.sh            # every Python 3.10-3.13 found
#     PYTHONS="3.12" bash tools/wheel_check.sh
#     PYTEST_ARGS="-x" bash tools/wheel_check.sh   # extra pytest arguments
#
# Pythons come from pyenv when it is there (its newest 3.x.y of each), else
# from python3.x on PATH (e.g. actions/setup-python with several versions).
# Quiet: one line per step, a build or test log only when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/dist" "$scratch/wheels" "$scratch/logs"

# run LOG COMMAND...: the command's output goes to LOG, shown if it fails.
run() {
    local log="$scratch/logs/$1"; shift
    if ! "$@" >"$log" 2>&1; then
        echo "FAILED: $*" >&2
        tail -n 60 "$log" >&2
        exit 1
    fi
}

find_python() {  # find_python 3.12 → path of a CPython 3.12, or nothing
    local version=$1 candidate
    if command -v pyenv >/dev/null 2>&1; then
        candidate=$(find "$(pyenv root)/versions" -maxdepth 1 -name "$version.*" \
                        -printf '%f\n' 2>/dev/null | grep -E "^$version\.[0-9]+$" \
                    | sort -t. -k3,3n | tail -n 1)
        if [ -n "$candidate" ]; then
            echo "$(pyenv root)/versions/$candidate/bin/python"
            return
        fi
    fi
    command -v "python$version" 2>/dev/null || true
}

pythons=()
for version in ${PYTHONS:-3.10 3.11 3.12 3.13}; do
    python=$(find_python "$version")
    if [ -n "$python" ]; then
        pythons+=("$python")
    else
        echo "no Python $version here: skipped"
    fi
done
[ "${#pythons[@]}" -gt 0 ] || { echo "no Python 3.10-3.13 found" >&2; exit 1; }

# ----------------------------------------------------------------- tools
tools_python=${pythons[${#pythons[@]}-1]}
run tools-venv "$tools_python" -m venv "$scratch/tools"
run tools-install "$scratch/tools/bin/python" -m pip install --quiet \
    build twine check-wheel-contents auditwheel
tools="$scratch/tools/bin"

# ----------------------------------------------------------------- sdist
# From a copy of the files git would commit (tracked or not ignored): building
# in the work tree would leave .c files cythonized against the build env's
# numpy, and an egg-info, in src/ for the next in-place build to trip on.
source="$scratch/source"
mkdir -p "$source"
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # ... less deleted files and any virtual environment left in the tree
    # (e.g. .ci/venv): a directory holding a pyvenv.cfg.
    git -C "$root" ls-files -z --cached --others --exclude-standard \
    | "$tools/python" -c '
import os, sys
files = [f for f in sys.stdin.read().split("\0") if f and os.path.exists(f)]
venvs = tuple(os.path.dirname(f) + "/" for f in files
              if os.path.basename(f) == "pyvenv.cfg")
sys.stdout.write("".join(f + "\0" for f in files if not f.startswith(venvs)))
' >"$scratch/files"
    tar -C "$root" --null -T "$scratch/files" -cf - | tar -C "$source" -xf -
else
    tar -C "$root" --exclude=./build --exclude=./dist --exclude='*.egg-info' \
        --exclude='*.so' --exclude='*.pyd' --exclude='./src/crnn/*.c' \
        --exclude=__pycache__ -cf - . | tar -C "$source" -xf -
fi
run sdist "$tools/python" -m build --sdist --outdir "$scratch/dist" "$source"
sdist=$(echo "$scratch"/dist/crnn-*.tar.gz)
echo "sdist   $(basename "$sdist")  $(du -k "$sdist" | cut -f1) KiB"
run twine-sdist "$tools/twine" check --strict "$sdist"
tar -xzf "$sdist" -C "$scratch"
unpacked=$(echo "$scratch"/crnn-*/)
for required in src/crnn/api.pxd src/crnn/api.pyx tests/test_capi.py \
                examples/downstream/crnn_downstream.pyx; do
    [ -e "$unpacked/$required" ] || { echo "the sdist lacks $required" >&2; exit 1; }
done

# A test directory outside every source tree: the sdist's tests and the
# downstream example, and nothing that could shadow the installed crnn.
mkdir -p "$scratch/suite/examples"
cp -r "$unpacked/tests" "$scratch/suite/tests"
cp -r "$unpacked/examples/downstream" "$scratch/suite/examples/downstream"

# ---------------------------------------------------- per Python: build, check, test
summary=()
failed=0
for python in "${pythons[@]}"; do
    tag=$("$python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    out="$scratch/wheels/$tag"
    run "wheel-$tag" "$python" -m pip wheel --no-deps --wheel-dir "$out" "$sdist"
    wheel=$(echo "$out"/crnn-*.whl)

    run "twine-$tag" "$tools/twine" check --strict "$wheel"
    run "contents-$tag" "$tools/check-wheel-contents" "$wheel"
    if [ "$(uname -s)" = Linux ]; then
        run "auditwheel-$tag" "$tools/auditwheel" show "$wheel"
        # "… is consistent with the following platform tag: "manylinux_…"."
        platform=$(tr -s ' \n' ' ' <"$scratch/logs/auditwheel-$tag" \
                   | grep -o 'platform tag: "[^"]*"' | head -n 1 | cut -d'"' -f2 || true)
    else
        platform=n/a
    fi

    # No debug information: no .debug_* section in any extension module.
    mkdir -p "$scratch/unzipped/$tag"
    "$tools/python" -m zipfile -e "$wheel" "$scratch/unzipped/$tag"
    if command -v readelf >/dev/null 2>&1; then
        while IFS= read -r module; do
            if readelf -S --wide "$module" | grep -q '\.debug_'; then
                echo "$(basename "$module") in $(basename "$wheel") has debug sections" >&2
                exit 1
            fi
        done < <(find "$scratch/unzipped/$tag" -name '*.so')
    fi

    venv="$scratch/venv-$tag"
    run "venv-$tag" "$python" -m venv "$venv"
    run "install-$tag" "$venv/bin/python" -m pip install --quiet "$wheel" \
        pytest "cython>=3.0" "setuptools>=64"
    # From the suite directory: crnn can only come from the venv.  A failing
    # suite is reported (its failures listed) and the other Pythons still run.
    read -r -a pytest_args <<<"${PYTEST_ARGS:-}"
    if (cd "$scratch/suite" && "$venv/bin/python" -m pytest -q -p no:cacheprovider \
            "${pytest_args[@]}" tests >"$scratch/logs/pytest-$tag" 2>&1); then
        verdict=ok
    else
        verdict=FAILED
        failed=1
        grep -E '^(FAILED|ERROR) ' "$scratch/logs/pytest-$tag" | head -n 20 >&2 || \
            tail -n 40 "$scratch/logs/pytest-$tag" >&2
    fi
    result=$(tail -n 1 "$scratch/logs/pytest-$tag" | sed 's/=//g; s/^ *//; s/ *$//')
    size_kib=$(du -k "$wheel" | cut -f1)
    so_kib=$(find "$scratch/unzipped/$tag" \( -name '*.so' -o -name '*.pyd' \) \
                 -exec du -ck {} + | tail -n 1 | cut -f1)
    echo "$tag  $(basename "$wheel")  ${size_kib} KiB (extensions ${so_kib} KiB unpacked)  $platform"
    echo "      twine, check-wheel-contents, auditwheel, no debug sections: ok;  tests $verdict: $result"
    summary+=("$tag ${size_kib}KiB tests-$verdict")
done

if [ "$failed" -ne 0 ]; then
    echo "wheel path FAILED: ${summary[*]}"
    exit 1
fi
echo "wheel path ok: ${summary[*]}"
