"""Model monitoring: online KPIs (kpis.py), drift by PSI (drift.py), and the figures a router
replica computes from Redis's entries with them (online.py, whose functions are named here)."""
from gateway.monitoring.online import drift_report, lifetime_kpis, variant_kpis, window_kpis

__all__ = ["drift_report", "lifetime_kpis", "variant_kpis", "window_kpis"]
