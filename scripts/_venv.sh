# shellcheck shell=bash
# Shared by scripts/test and scripts/serve: create or reuse a virtualenv in the repository and
# install geartrain into it with the given extras, pinned by a lock file.
# Usage (sourced, from the repository root): ensure_venv "dev"; then use "$VENV/bin/...".
#
# GEARTRAIN_BUILD picks the build of geartrain itself (see hatch_build.py):
#   compiled (default)  a wheel whose hot modules mypyc compiled (needs a C compiler), installed
#                       non-editable and rebuilt whenever a file under src/ changed, so a stale
#                       compiled module never shadows an edited source
#   pure                an editable install of the sources, nothing compiled: edits count at once
# GEARTRAIN_PURE=1 runs the pure modules of whatever is installed (geartrain/_build.py).
#
# GEARTRAIN_DEPS picks the dependency set (see scripts/lock):
#   locked (default)  requirements/locked.txt, exactly what CI tests, in .venv
#   oldest            requirements/oldest.txt, the lowest versions pyproject.toml allows, in .venv-oldest
#   latest            the newest releases pyproject.toml allows, upgraded on every run, in .venv-latest

ensure_venv() {
    local extras="$1"
    local python="${PYTHON:-python3}"
    local deps="${GEARTRAIN_DEPS:-locked}"
    local constraints=()
    local build="${GEARTRAIN_BUILD:-compiled}"
    case "$build" in
        compiled | pure) ;;
        *)
            echo "error: GEARTRAIN_BUILD=$build: use compiled or pure" >&2
            return 1
            ;;
    esac
    case "$deps" in
        locked) VENV=.venv constraints=(-c requirements/locked.txt) ;;
        oldest) VENV=.venv-oldest constraints=(-c requirements/oldest.txt) ;;
        latest) VENV=.venv-latest ;;
        *)
            echo "error: GEARTRAIN_DEPS=$deps: use locked, oldest or latest" >&2
            return 1
            ;;
    esac

    if ! command -v "$python" >/dev/null 2>&1; then
        echo "error: $python not found (set PYTHON=/path/to/python3.11+)" >&2
        return 1
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "error: geartrain needs Python >= 3.11, $python is $("$python" -V 2>&1)" >&2
        return 1
    fi

    if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        echo "== $VENV is broken, recreating it" >&2
        rm -rf "$VENV"
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "== creating $VENV with $("$python" -V 2>&1)" >&2
        if ! "$python" -m venv "$VENV"; then
            # Debian ships venv support separately (python3-venv); install it when we can.
            rm -rf "$VENV"
            if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
                echo "== installing python3-venv" >&2
                export DEBIAN_FRONTEND=noninteractive
                apt-get update -q </dev/null
                apt-get install -y -q python3-venv </dev/null
                "$python" -m venv "$VENV"
            else
                echo "error: '$python -m venv' failed; install python3-venv" >&2
                return 1
            fi
        fi
    fi

    local pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
    # The compiled build is a wheel, not editable: its extensions are built from the sources
    # as they were at install time.
    local editable=(-e)
    if [[ "$build" == compiled ]]; then
        editable=()
    fi
    if [[ "$deps" == latest ]]; then
        echo "== installing geartrain[$extras] ($build build) with the newest dependencies into $VENV" >&2
        # Same version number, maybe new sources: pip would keep the installed geartrain.
        "$VENV/bin/python" -m pip uninstall -q -y geartrain </dev/null >/dev/null 2>&1
        GEARTRAIN_BUILD="$build" "${pip[@]}" --upgrade --upgrade-strategy eager \
            "${editable[@]}" ".[$extras]" </dev/null || return 1
        "$VENV/bin/python" -m pip freeze --exclude-editable | grep -v '^geartrain' >"$VENV/installed.txt"
        echo "== newest versions installed (differences from requirements/locked.txt):" >&2
        diff <(grep -E '^[A-Za-z0-9]' requirements/locked.txt | sed 's/ *;.*//' | tr 'A-Z_' 'a-z-' | sort) \
            <(tr 'A-Z_' 'a-z-' <"$VENV/installed.txt" | sort) | grep '^>' >&2 || echo "   none" >&2
        return 0
    fi

    # Reinstall only when the project metadata, the lock file or the build changed since the
    # last install; the compiled build also when a file it is built from changed.
    local stamp="$VENV/.geartrain-install-stamp"
    local want
    want="$extras $build $(cksum pyproject.toml "${constraints[1]}")"
    if [[ "$build" == compiled ]]; then
        want="$want $(find src hatch_build.py -type f -not -path '*/__pycache__/*' -print0 |
            LC_ALL=C sort -z | xargs -0 cksum | cksum)"
    fi
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
        echo "== installing geartrain[$extras] ($build build) into $VENV (${constraints[1]})" >&2
        rm -f "$stamp"
        # Same version number, new sources: pip would keep the installed geartrain.
        "$VENV/bin/python" -m pip uninstall -q -y geartrain </dev/null >/dev/null 2>&1
        GEARTRAIN_BUILD="$build" "${pip[@]}" "${constraints[@]}" "${editable[@]}" ".[$extras]" \
            </dev/null || return 1
        echo "$want" >"$stamp"
    fi
}
