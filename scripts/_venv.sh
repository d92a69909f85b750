# shellcheck shell=bash
# Shared by scripts/test and scripts/serve: create or reuse a virtualenv in the repository and
# install geartrain into it in editable mode with the given extras, pinned by a lock file.
# Usage (sourced, from the repository root): ensure_venv "dev"; then use "$VENV/bin/...".
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
    if [[ "$deps" == latest ]]; then
        echo "== installing geartrain[$extras] with the newest dependencies into $VENV" >&2
        "${pip[@]}" --upgrade --upgrade-strategy eager -e ".[$extras]" </dev/null || return 1
        "$VENV/bin/python" -m pip freeze --exclude-editable >"$VENV/installed.txt"
        echo "== newest versions installed (differences from requirements/locked.txt):" >&2
        diff <(grep -E '^[A-Za-z0-9]' requirements/locked.txt | sed 's/ *;.*//' | tr 'A-Z_' 'a-z-' | sort) \
            <(tr 'A-Z_' 'a-z-' <"$VENV/installed.txt" | sort) | grep '^>' >&2 || echo "   none" >&2
        return 0
    fi

    # Reinstall only when the project metadata or the lock file changed since the last install.
    local stamp="$VENV/.geartrain-install-stamp"
    local want
    want="$extras $(cksum pyproject.toml "${constraints[1]}")"
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
        echo "== installing geartrain[$extras] into $VENV (${constraints[1]})" >&2
        "${pip[@]}" "${constraints[@]}" -e ".[$extras]" </dev/null || return 1
        echo "$want" >"$stamp"
    fi
}
