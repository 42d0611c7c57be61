"""The data plane and its parts:

- plane: the façade, with the predict path and the lifecycle (what the HTTP and gRPC edges call);
- feedback: rewards and labels, validated and applied exactly once;
- upkeep: refresh, promotion, guardrails, expiry, monitoring, series, retraining triggers;
- promotions: the upkeep's steps when a rule decides (a champion, per segment, shadow first);
- runtime: the experiments served, their policies, variants and last computed figures;
- transitions: status changes shared by the upkeep and operators.
Where a write goes (Redis or the local spool) is gateway.store.writer's one decision."""
from gateway.dataplane.feedback import MAX_ID_LEN, MAX_REWARDS_PER_BATCH
from gateway.dataplane.plane import REQUEST_ID, DataPlane, new_request_id
from gateway.dataplane.runtime import VariantClient

__all__ = ["DataPlane", "VariantClient", "new_request_id", "REQUEST_ID", "MAX_ID_LEN", "MAX_REWARDS_PER_BATCH"]
