#!/usr/bin/env bash
# Multi-node tier: the gateway on a Ray cluster of three real nodes (a head and two workers, each
# a `ray start` of the tests' own on this machine, own temp folder and ports), with node loss
# under load and `serve deploy deployments/cluster.yaml`. Nothing to install beyond '.[test]'.
# Run from the repo root after `pip install -e '.[test]'`:  bash .ci/multinode.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0
PY="${PYTHON:-python}"  # the project's venv (active when .ci/run calls this)

export GATEWAY_TEST_MULTINODE=1 RAY_USAGE_STATS_ENABLED=0
set +e
"$PY" -m pytest tests/integration/test_multinode.py tests/unit/test_node_spool_dir.py -p no:cacheprovider
code=$?
set -e
echo "multinode.sh: pytest exited $code (${SECONDS}s)" >&2
exit "$code"
