"""For `serve run deployments/...` without GATEWAY_REDIS_URL: one embedded redis-server per Ray
cluster, owned by a named actor so every router replica finds the same one."""
from __future__ import annotations

import ray

from gateway.store.embedded import EmbeddedRedis

ACTOR_NAME = "gateway-embedded-redis"
NAMESPACE = "gateway"


@ray.remote(num_cpus=0)
class EmbeddedRedisActor:
    def __init__(self, state_dir: str, appendfsync: str = "everysec"):
        self.server = EmbeddedRedis(state_dir, appendfsync).start()

    def url(self) -> str:
        return self.server.url

    def __ray_shutdown__(self):
        self.server.stop()


def embedded_redis_url(state_dir: str, appendfsync: str = "everysec") -> str:
    actor = EmbeddedRedisActor.options(
        name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(state_dir, appendfsync)
    return ray.get(actor.url.remote())
