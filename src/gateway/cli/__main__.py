import sys

from gateway.cli.main import app

sys.exit(app())
