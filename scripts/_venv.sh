# shellcheck shell=bash
# Shared by scripts/test and scripts/serve: create or reuse the virtualenv .venv in the
# repository and install geartrain into it in editable mode with the given extras.
# Usage (sourced, from the repository root): ensure_venv "dev"

ensure_venv() {
    local extras="$1"
    local python="${PYTHON:-python3}"
    local venv=".venv"

    if ! command -v "$python" >/dev/null 2>&1; then
        echo "error: $python not found (set PYTHON=/path/to/python3.11+)" >&2
        return 1
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "error: geartrain needs Python >= 3.11, $python is $("$python" -V 2>&1)" >&2
        return 1
    fi

    if [[ -x "$venv/bin/python" ]] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        echo "== $venv is broken, recreating it" >&2
        rm -rf "$venv"
    fi
    if [[ ! -x "$venv/bin/python" ]]; then
        echo "== creating $venv with $("$python" -V 2>&1)" >&2
        if ! "$python" -m venv "$venv"; then
            # Debian ships venv support separately (python3-venv); install it when we can.
            rm -rf "$venv"
            if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
                echo "== installing python3-venv" >&2
                export DEBIAN_FRONTEND=noninteractive
                apt-get update -q </dev/null
                apt-get install -y -q python3-venv </dev/null
                "$python" -m venv "$venv"
            else
                echo "error: '$python -m venv' failed; install python3-venv" >&2
                return 1
            fi
        fi
    fi

    # Reinstall only when the project metadata changed since the last install.
    local stamp="$venv/.geartrain-install-stamp"
    local want
    want="$extras $(cksum pyproject.toml)"
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
        echo "== installing geartrain[$extras] into $venv" >&2
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[$extras]" </dev/null
        echo "$want" >"$stamp"
    fi
}
