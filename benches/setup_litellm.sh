#!/usr/bin/env bash
# Installs the LiteLLM proxy the benchmarks compare against into its own venv,
# kept apart so its large dependency tree never leaks into mmproxy's environment.
# Idempotent: does nothing when the pinned version is already there.
set -euo pipefail

LITELLM_VERSION="${LITELLM_VERSION:-1.108.7}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${LITELLM_VENV:-$HERE/.litellm-venv}"
PYTHON="${PYTHON:-python3}"
# Importing litellm must not reach for the network (cost map) or phone home.
export LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$LITELLM_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
import litellm.proxy.proxy_server  # noqa: F401  (proves the [proxy] extra is importable)
sys.exit(0 if version("litellm") == sys.argv[1] else 1)
EOF
then
    echo "litellm $LITELLM_VERSION already installed in $VENV"
    exit 0
fi

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "litellm[proxy]==$LITELLM_VERSION"
"$VENV/bin/python" -c "import litellm.proxy.proxy_server" >/dev/null
echo "litellm $LITELLM_VERSION installed in $VENV ($VENV/bin/litellm)"
