#!/usr/bin/env bash
# Build the bench-only venv for bench/compare_libs.py: xplique and tf-keras-vis, which must
# never become dependencies of the service. Idempotent; run from anywhere:
#   bash bench/compare_env.sh
# The venv lives in bench/.venv-compare (git-ignored). Only PyPI is used.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-compare"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet \
  "tensorflow==2.21.0" "tf-keras==2.21.0" xplique tf-keras-vis scikit-image
"$venv/bin/python" - <<'PY'
from importlib.metadata import version
for name in ("tensorflow", "tf-keras", "keras", "xplique", "tf-keras-vis", "scikit-image", "numpy"):
    print(f"{name}=={version(name)}")
PY
