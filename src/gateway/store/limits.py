"""How much the store keeps: every stream and list in Redis is bounded."""

# Bounded so the log cannot eat the server's memory; the retrainer reads recent windows. Each
# stream keeps at most this many entries and, with entries the size of the newest, at most
# budget / size of them: about twice the byte budget at worst (1000-row requests trim it sooner).
DECISION_LOG_MAXLEN = 200_000
DECISION_LOG_BYTES = 256 * 2**20
FEEDBACK_MAXLEN = 200_000
FEEDBACK_BYTES = 128 * 2**20
# About 5.5 hours of dashboard history at one point every 2 s.
SERIES_MAXLEN = 10_000
# Decisions (promotions, rollbacks, challengers, retrains, drift alarms) kept per experiment; the
# oldest are trimmed, so the state read every few seconds stays small.
HISTORY_MAXLEN = 1_000
# The shadow log is bounded like the decision log, in entries and in bytes.
SHADOW_LOG_MAXLEN = 200_000
SHADOW_LOG_BYTES = 128 * 2**20
