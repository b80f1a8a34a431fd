#!/usr/bin/env bash
# The thread team's standalone C test (tests/c/team_test.c, no Python):
# built with the native compiler and run; then, where MinGW-w64 and Wine are
# installed (Debian: gcc-mingw-w64-x86-64 wine64), built for Windows and run
# under Wine, once with GCC's atomics and once with the Interlocked
# intrinsics that MSVC builds use.  --windows: fail when MinGW or Wine is
# missing (CI installs them) instead of skipping that half.
set -euo pipefail
cd "$(dirname "$0")/.."

require_windows=0
[ "${1:-}" = "--windows" ] && require_windows=1
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
flags=(-O2 -std=c11 -Wall -Wextra -Werror -Isrc/crnn)

echo "+ team test, native"
"${CC:-cc}" "${flags[@]}" -D_POSIX_C_SOURCE=200809L tests/c/team_test.c \
    -o "$scratch/team_test" -lpthread -lm
"$scratch/team_test"

wine=""
for candidate in wine64 /usr/lib/wine/wine64 wine; do
    if command -v "$candidate" >/dev/null 2>&1; then wine="$candidate"; break; fi
done
if ! command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || [ -z "$wine" ]; then
    echo "team test for Windows: x86_64-w64-mingw32-gcc or wine64 missing" >&2
    [ "$require_windows" = 1 ] && exit 1
    exit 0
fi
export WINEPREFIX="$scratch/wineprefix" WINEDEBUG=-all
echo "+ team test, Windows (MinGW-w64, under $wine)"
x86_64-w64-mingw32-gcc "${flags[@]}" tests/c/team_test.c -o "$scratch/team_test.exe" -static
timeout 300 "$wine" "$scratch/team_test.exe"
# MSVC's branch of the atomics (Interlocked intrinsics), which MinGW has too
echo "+ team test, Windows, MSVC's atomics (MinGW-w64, under $wine)"
x86_64-w64-mingw32-gcc "${flags[@]}" -DCRNN_TEAM_INTERLOCKED tests/c/team_test.c \
    -o "$scratch/team_test_interlocked.exe" -static
timeout 300 "$wine" "$scratch/team_test_interlocked.exe"
# let Wine's server write its registry before the prefix is removed
for server in wineserver /usr/lib/wine/wineserver64 /usr/lib/wine/wineserver; do
    if command -v "$server" >/dev/null 2>&1; then "$server" -w || true; break; fi
done
