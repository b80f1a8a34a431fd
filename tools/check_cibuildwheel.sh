#!/usr/bin/env bash
# Check that pyproject.toml's [tool.cibuildwheel] selects exactly the wheels
# crnn ships: CPython 3.10-3.15 on manylinux x86_64 + aarch64, macOS x86_64 +
# arm64 and Windows AMD64 (30 builds), and that each job of
# .github/workflows/wheels.yml (one CIBW_ARCHS each) builds its 6.  No Docker
# is needed: only `cibuildwheel --print-build-identifiers` runs.
#
# Uses $CIBUILDWHEEL if set, else installs the version wheels.yml pins into a
# temporary venv.  Prints one line per check; exits non-zero on a mismatch.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! grep -qs '^name = "crnn"' pyproject.toml; then
    echo "$0 must be in tools/ of a crnn checkout" >&2
    exit 1
fi

VERSION=4.3.5    # keep in step with pypa/cibuildwheel's pin in wheels.yml
grep -q "pypa/cibuildwheel@.* # v$VERSION\$" .github/workflows/wheels.yml || {
    echo "wheels.yml does not pin pypa/cibuildwheel v$VERSION" >&2; exit 1; }

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
if [ -z "${CIBUILDWHEEL:-}" ]; then
    python3 -m venv "$scratch/venv"
    "$scratch/venv/bin/python" -m pip install --quiet "cibuildwheel==$VERSION" \
        >"$scratch/pip.log" 2>&1 || { cat "$scratch/pip.log" >&2; exit 1; }
    CIBUILDWHEEL="$scratch/venv/bin/cibuildwheel"
fi

pythons=(cp310 cp311 cp312 cp313 cp314 cp315)
failed=0

# check NAME EXPECTED-IDENTIFIERS (one a line) COMMAND...
check() {
    local name=$1 want got
    want=$(sort <<<"$2")
    shift 2
    got=$(env -u CIBW_BUILD -u CIBW_SKIP -u CIBW_ARCHS -u CIBW_ENABLE "$@" | sort)
    if [ "$want" = "$got" ]; then
        echo "ok    $name: $(echo "$got" | wc -l) builds"
    else
        echo "FAIL  $name"
        diff <(echo "$want") <(echo "$got") | sed 's/^/      /' || true
        failed=1
    fi
}

ids() {  # ids PLATFORM-TAG...: every Python for each tag
    local tag python
    for tag in "$@"; do
        for python in "${pythons[@]}"; do echo "$python-$tag"; done
    done
}

# The whole configuration, per platform (archs from pyproject.toml).
check linux "$(ids manylinux_x86_64 manylinux_aarch64)" \
    "$CIBUILDWHEEL" --print-build-identifiers --platform linux
check macos "$(ids macosx_x86_64 macosx_arm64)" \
    "$CIBUILDWHEEL" --print-build-identifiers --platform macos
check windows "$(ids win_amd64)" \
    "$CIBUILDWHEEL" --print-build-identifiers --platform windows
# Even with PyPy, GraalPy and pre-releases enabled, none of them is selected
# (cibuildwheel 4 has no free-threading switch: "cp314-*" never matches
# cp314t; pyproject.toml says why those are left out).
check "linux, everything enabled" "$(ids manylinux_x86_64 manylinux_aarch64)" \
    env CIBW_ENABLE="pypy graalpy cpython-prerelease" \
    "$CIBUILDWHEEL" --print-build-identifiers --platform linux

# One wheels.yml job per (platform, arch).
for job in linux:x86_64:manylinux_x86_64 linux:aarch64:manylinux_aarch64 \
           macos:x86_64:macosx_x86_64 macos:arm64:macosx_arm64 \
           windows:AMD64:win_amd64; do
    IFS=: read -r platform arch tag <<<"$job"
    check "job $platform $arch" "$(ids "$tag")" \
        env CIBW_ARCHS="$arch" \
        "$CIBUILDWHEEL" --print-build-identifiers --platform "$platform"
done

exit "$failed"
