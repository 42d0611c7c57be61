"""While Ray runs in the CLI's process, whatever writes to fds 1 and 2 (Python loggers, C++,
forwarded worker lines) lands in the log file, and only the CLI's own consoles reach the
terminal; --verbose changes nothing. Run in a child process: it moves its own fds."""
from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import logging, os, sys
    from pathlib import Path
    from rich.console import Console
    from gateway.cli.terminal import ray_output_to_log

    out, err = Console(), Console(stderr=True)
    logging.basicConfig()  # a handler bound to sys.stderr, as Ray's are
    with ray_output_to_log(Path(sys.argv[1]), [out, err], verbose=sys.argv[2] == "1"):
        out.print("gateway serving")
        err.print("error: a CLI error")
        logging.getLogger("ray").warning("Token authentication is enabled")
        os.write(2, b"Task ServeController.graceful_shutdown failed\\n")   # as C++ writes
        print("(ServeController pid=1) INFO forwarded")                   # as worker lines come
    print("after the block")
""")


def run(tmp_path, verbose: bool):
    log = tmp_path / "logs" / "gateway.log"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(log), "1" if verbose else "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done, (log.read_text() if log.exists() else "")


RAY = ("Token authentication is enabled", "graceful_shutdown failed", "(ServeController pid=1)")


def test_rays_lines_go_to_the_log_and_the_clis_to_the_terminal(tmp_path):
    done, log = run(tmp_path, verbose=False)
    assert done.stdout.splitlines() == ["gateway serving", "after the block"]
    assert done.stderr.splitlines() == ["error: a CLI error"]
    for line in RAY:
        assert line in log and line not in done.stdout + done.stderr
    assert (tmp_path / "logs").stat().st_mode & 0o777 == 0o700


def test_verbose_leaves_everything_on_the_terminal(tmp_path):
    done, log = run(tmp_path, verbose=True)
    for line in RAY:
        assert line in done.stdout + done.stderr
    assert "gateway serving" in done.stdout and log == ""
