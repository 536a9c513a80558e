#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: a venv with parawatt and its dev tools, and the system
# tools the tests use (Prometheus/promtool from Debian, PostgreSQL server binaries, gcc).
# A second run only checks stamps and returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PARAWATT_VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

# pip under a quiet filter: this machine's global pip config names local indexes that may be absent.
pipq() { local rc; set +e; "$@" 2>&1 | grep -v 'is ignored: it is neither'; rc=${PIPESTATUS[0]}; set -e; return "$rc"; }

stamp_of() { cat pyproject.toml scripts/constraints.txt | sha256sum | cut -c1-16; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
want=$(stamp_of)
if [ "$(cat "$VENV/.parawatt-stamp" 2>/dev/null)" != "$want" ]; then
  # torch's CUDA wheel unpacks to ~5.5 GB: say so plainly before pip fails half-way on a full disk.
  if ! "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
    free_kb=$(df -Pk "$VENV" | awk 'NR==2 {print $4}')
    if [ "${free_kb:-0}" -lt $((7 * 1024 * 1024)) ]; then
      echo "[setup] error: $((free_kb / 1024)) MiB free where $VENV lives; installing torch needs" \
        "about 7 GiB (the wheel unpacks to 5.5 GB). Free some space (old clones, pip caches)," \
        "then run this again." >&2
      exit 1
    fi
  fi
  echo "[setup] installing parawatt and its dependencies into $VENV (torch is large: ~2 min first time)"
  pipq "$VENV/bin/python" -m pip install -q --upgrade pip
  # setuptools prints a multi-line "Editable installation" advisory for every editable install
  # (nothing to act on); the filter reaches the build backend's process through the environment.
  # The versions tested here (constraints.txt); the package itself asks only for lower bounds.
  PYTHONWARNINGS="ignore:Editable installation" PIP_CONSTRAINT=scripts/constraints.txt \
    pipq "$VENV/bin/python" -m pip install -q -e '.[train,dev]'
  echo "$want" > "$VENV/.parawatt-stamp"
fi

# docker-compose 1.29 (PyPI) validates docker-compose.yml offline; it has its own venv because its
# pinned dependencies (PyYAML 5, old requests) clash with ours, and PyYAML 5 needs cython<3 to build.
COMPOSE_VENV=${PARAWATT_COMPOSE_VENV:-.venv-compose}
if [ ! -x "$COMPOSE_VENV/bin/docker-compose" ]; then
  echo "[setup] installing docker-compose 1.29 into $COMPOSE_VENV (validates the compose file)"
  rm -rf "$COMPOSE_VENV"
  "$PY" -m venv "$COMPOSE_VENV"
  cons=$(mktemp); echo 'cython<3' > "$cons"
  PIP_CONSTRAINT="$cons" pipq "$COMPOSE_VENV/bin/python" -m pip install -q docker-compose==1.29.2 \
    || echo "[setup] docker-compose could not be installed; the compose test will be skipped" >&2
  rm -f "$cons"
fi

need_apt=()
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # Their services are not started (the tests start their own servers): see no-service-starts.sh.
    # Nothing already running is stopped either: this script only ever ends what it started.
    echo "[setup] apt-get install ${need_apt[*]} (without starting their services)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    scripts/no-service-starts.sh apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "[setup] missing system tools (${need_apt[*]}); the tests that need them will be skipped" >&2
  fi
fi
