"""Off-policy evaluation from the gateway's own logged propensities."""
