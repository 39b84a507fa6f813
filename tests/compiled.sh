#!/usr/bin/env bash
# The test suite against the compiled build (WSGI_SESSION_COMPILE=1, see
# setup.py): a copy of this git checkout whose request-path modules mypyc
# compiles in place, tested by the same tests, in processes and gunicorn
# workers alike.
#
#   bash tests/compiled.sh PYTHON [pytest arguments]
#
# PYTHON is an interpreter with the dev extras installed (mypy among them).
set -euo pipefail
case "${1:?usage: bash tests/compiled.sh PYTHON [pytest arguments]}" in
*/*) python="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")" ;; # absolute, symlinks kept (a venv)
*) python="$(command -v "$1")" ;;
esac
shift
root="$(cd "$(dirname "$0")/.." && pwd)"
git -C "$root" rev-parse --git-dir >/dev/null 2>&1 || {
    echo "tests/compiled.sh copies a git checkout's files: $root is not one" >&2
    exit 2
}
build="$(mktemp -d "${TMPDIR:-/tmp}/wsgi_session_compiled.XXXXXX")"
trap 'rm -rf "$build"' EXIT

# Tracked and untracked files that are not ignored, as they are in the work tree.
cd "$root"
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' file; do [[ -e $file ]] && printf '%s\0' "$file"; done |
    tar --null -T - -cf - | tar -xf - -C "$build"
cd "$build"
echo "compiling the request path with mypyc in $build ..."
WSGI_SESSION_COMPILE=1 "$python" setup.py -q build_ext --inplace >build.log 2>&1 || {
    cat build.log
    exit 1
}
WSGI_SESSION_EXPECT_COMPILED=1 "$python" -m pytest "$@"
