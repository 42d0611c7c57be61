"""How often a stopping replica checks whether its requests have finished.

Serve's default (graceful_shutdown_wait_loop_s, 2 s) made every stop slow: a replica that is not
the ingress sleeps one whole loop before its first check, and `serve.shutdown` stops the
ingress and then the other deployments in turn, so an idle Retrainer alone added 2 s to each
Ctrl-C. The check only counts the replica's ongoing requests, so a short period costs nothing;
the ingress's own drain window (RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S) is unchanged.
"""

DRAIN_POLL_S = 0.1
