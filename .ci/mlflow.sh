#!/usr/bin/env bash
# MLflow tier: install the MLflow tracking server into its own venv, install the gateway's
# `mlflow` extra (the mlflow-skinny client) into the project's venv, and run the MLflow tests;
# their session fixture starts `mlflow server` (sqlite backend, local artifact folder) on a free
# loopback port and stops it at the end.
# Run from the repo root after `pip install -e '.[test]'`:  bash .ci/mlflow.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0

MLFLOW_VERSION="${MLFLOW_VERSION:-3.17.2}"
MLFLOW_VENV="${MLFLOW_VENV:-.venv-mlflow}"
PY="${PYTHON:-python}"  # the project's venv (active when .ci/run calls this)

# The full `mlflow` package (the server) pins graphene, which downgrades python-dateutil and
# graphql-core below what the project's venv holds: keep the server in a venv of its own. The
# client side (mlflow-skinny) adds packages only, so it goes into the project's venv.
if ! "$MLFLOW_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('mlflow') != sys.argv[1])" "$MLFLOW_VERSION" 2>/dev/null; then
  echo "mlflow.sh: installing mlflow==$MLFLOW_VERSION into $MLFLOW_VENV" >&2
  "$PY" -m venv --clear "$MLFLOW_VENV"
  "$MLFLOW_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "mlflow==$MLFLOW_VERSION"
fi
"$PY" -m pip install --quiet --disable-pip-version-check -e '.[mlflow]'
# pip only warns about an unknown extra: make sure the client really is there.
"$PY" -c "import mlflow.sklearn, mlflow.xgboost" || { echo "mlflow.sh: the mlflow extra did not install mlflow-skinny" >&2; exit 1; }
echo "mlflow.sh: mlflow $MLFLOW_VERSION server ready in $MLFLOW_VENV (${SECONDS}s)" >&2

export GATEWAY_TEST_MLFLOW_SERVER="$PWD/$MLFLOW_VENV/bin/mlflow"
set +e
"$PY" -m pytest tests/integration/test_mlflow.py tests/unit/test_mlflow_uris.py tests/unit/test_mlflow_errors.py -p no:cacheprovider
code=$?
set -e
echo "mlflow.sh: pytest exited $code (${SECONDS}s)" >&2
exit "$code"
