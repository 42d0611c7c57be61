"""The command line (main.py: `gateway serve`, `demo`, `plan`, `policy check`, the admin verbs in
admin.py) and what it runs on one machine: the local runtime (local.py: embedded Redis, Ray,
Serve), the demo (demo.py) and its report (report.py)."""
from gateway.cli.main import app

__all__ = ["app"]
