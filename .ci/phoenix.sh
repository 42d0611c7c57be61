#!/usr/bin/env bash
# End-to-end tracing tier: install Arize Phoenix (a real OTLP trace backend) into its own venv,
# start it on free loopback ports, run tests/e2e against it with the project's python, stop it.
# Run from the repo root after `pip install -e '.[test]'`:  bash .ci/phoenix.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0

PHOENIX_VERSION="${PHOENIX_VERSION:-20.26.1}"
PHOENIX_VENV="${PHOENIX_VENV:-.venv-phoenix}"
PY="${PYTHON:-python}"  # the project's venv (active when .ci/run calls this)

# Phoenix has hundreds of pinned dependencies: keep it out of the project's venv. Reused when the
# pinned version is already there.
if ! "$PHOENIX_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('arize-phoenix') != sys.argv[1])" "$PHOENIX_VERSION" 2>/dev/null; then
  echo "phoenix.sh: installing arize-phoenix==$PHOENIX_VERSION into $PHOENIX_VENV" >&2
  "$PY" -m venv --clear "$PHOENIX_VENV"
  "$PHOENIX_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "arize-phoenix==$PHOENIX_VERSION"
fi
echo "phoenix.sh: arize-phoenix $PHOENIX_VERSION ready in $PHOENIX_VENV (${SECONDS}s)" >&2

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/phoenix-e2e.XXXXXX")"
PHOENIX_PID=""
cleanup() {
  if [ -n "$PHOENIX_PID" ] && kill -0 "$PHOENIX_PID" 2>/dev/null; then
    kill -TERM -- "-$PHOENIX_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$PHOENIX_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$PHOENIX_PID" 2>/dev/null || true
  fi
  rm -rf "$WORKDIR"
}
trap cleanup EXIT

PORT="$(free_port)"
# Phoenix also opens an OTLP/gRPC port (4317 by default): move it off the shared default too.
GRPC_PORT="$(free_port)"
# setsid: Phoenix leads its own process group, so the trap can stop it and anything it spawned.
PHOENIX_HOST=127.0.0.1 PHOENIX_PORT="$PORT" PHOENIX_GRPC_PORT="$GRPC_PORT" \
  PHOENIX_WORKING_DIR="$WORKDIR/phoenix" PHOENIX_TELEMETRY_ENABLED=false \
  setsid "$PHOENIX_VENV/bin/phoenix" serve >"$WORKDIR/phoenix.log" 2>&1 &
PHOENIX_PID=$!
export PHOENIX_URL="http://127.0.0.1:$PORT"

"$PY" - "$PHOENIX_URL" "$PHOENIX_PID" <<'PYEOF' || { echo "phoenix.sh: Phoenix did not start; its log:" >&2; tail -n 60 "$WORKDIR/phoenix.log" >&2; exit 1; }
import os, sys, time, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 180
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("Phoenix exited")
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit("Phoenix not answering after 180s")
PYEOF
echo "phoenix.sh: Phoenix answering at $PHOENIX_URL (${SECONDS}s)" >&2

set +e
"$PY" -m pytest tests/e2e -p no:cacheprovider
code=$?
set -e
echo "phoenix.sh: pytest exited $code (${SECONDS}s)" >&2
if [ "$code" -ne 0 ]; then
  echo "phoenix.sh: pytest failed ($code); Phoenix log tail:" >&2
  tail -n 40 "$WORKDIR/phoenix.log" >&2
fi
exit "$code"
