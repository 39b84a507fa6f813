#!/usr/bin/env bash
# The test suite against the compiled build (WSGI_SESSION_COMPILE=1, see
# setup.py): a copy of this tree whose request-path modules mypyc compiles in
# place, tested by the same tests, in processes and gunicorn workers alike.
#
#   bash tests/compiled.sh PYTHON [pytest arguments]
#
# PYTHON is an interpreter with the dev extras installed (mypy among them).
set -euo pipefail
python="$(command -v "${1:?usage: bash tests/compiled.sh PYTHON [pytest arguments]}")"
shift
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$(mktemp -d "${TMPDIR:-/tmp}/wsgi_session_compiled.XXXXXX")"
trap 'rm -rf "$build"' EXIT

(cd "$root" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$root" && tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C "$build"
cd "$build"
echo "compiling the request path with mypyc in $build ..."
WSGI_SESSION_COMPILE=1 "$python" setup.py -q build_ext --inplace > build.log 2>&1 || {
    cat build.log
    exit 1
}
WSGI_SESSION_EXPECT_COMPILED=1 "$python" -m pytest "$@"
