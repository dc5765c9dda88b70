"""The engine on Ray Serve (`adapterkit serve --engine ray --replicas N`; extra `adapterkit[ray]`).

Each replica holds one Engine (one backbone). Adapters are Ray Serve *multiplexed models*: a
request names its adapter in the `serve_multiplexed_model_id` header (HTTP) or with
`handle.options(multiplexed_model_id=NAME)`, Ray routes it to a replica that already holds that
adapter, and `adapter()` loads it into the replica's engine on first use; Ray's per-replica LRU
(`max_num_models_per_replica`) unloads it again through `_Lease.__del__`. Ray's `serve.batch`
collects the requests of one adapter (Ray splits batches by model id); the engine then merges the
batches of different adapters that arrive within its max wait into one mixed step.

Multi-node: start Ray on every node (`ray start --head` on one, `ray start --address=HEAD:6379`
on the others), then run `adapterkit serve --engine ray --replicas N` on the head; the adapter
references must be readable on every node (a hub server: `hub:REPO:TAG` with --hub http://...).

HTTP: POST / with {"text": ..., "text_pair": ...} and the header `serve_multiplexed_model_id: NAME`.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time

from adapterkit.errors import AdapterkitError
from adapterkit.serve.engine import Engine, EngineConfig
from adapterkit.serve.errors import ServeError, UnknownAdapter


class _Lease:
    """What Ray's multiplexing cache holds per adapter; dropping it unloads the adapter."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine, self.name = engine, name

    def __del__(self) -> None:
        try:
            self.engine.evict(self.name)
        except Exception:
            pass


def build_app(config: EngineConfig, refs: dict[str, str], replicas: int = 2, adapters_per_replica: int | None = None):
    """A Ray Serve application of `replicas` engines over the adapters `refs` (name -> reference)."""
    try:
        from ray import serve
        from starlette.requests import Request
        from starlette.responses import JSONResponse
    except ImportError as e:
        raise AdapterkitError(f"--engine ray needs Ray Serve ({e}); pip install 'adapterkit[ray]'") from None
    per_replica = adapters_per_replica or config.max_adapters or 256
    settings = dataclasses.asdict(config) | {"max_adapters": per_replica + 1}

    @serve.deployment(num_replicas=replicas, ray_actor_options={"num_cpus": 0.5})
    class AdapterEngine:
        def __init__(self, settings: dict, refs: dict[str, str]) -> None:
            self.engine = Engine(EngineConfig(**settings))
            self.refs = refs

        @serve.multiplexed(max_num_models_per_replica=per_replica)
        async def adapter(self, name: str) -> _Lease:
            if name not in self.refs:
                raise UnknownAdapter(name)
            await asyncio.to_thread(self.engine.load, name, self.refs[name])
            return _Lease(self.engine, name)

        @serve.batch(max_batch_size=config.max_batch_size, batch_wait_timeout_s=config.max_wait_ms / 1000)
        async def _predict(self, items: list[dict]) -> list[dict]:
            name = serve.get_multiplexed_model_id()
            await self.adapter(name)
            futures = self.engine.submit_many([{"adapter": name, "text": i["text"], "text_pair": i.get("text_pair")}
                                               for i in items])
            return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))

        async def predict(self, item: dict) -> dict:
            """For deployment handles: handle.options(multiplexed_model_id=NAME).predict.remote({"text": ...})."""
            return await self._predict(item)

        async def __call__(self, request: Request):
            try:
                body = await request.json()
                if not isinstance(body, dict) or not isinstance(body.get("text"), str):
                    return JSONResponse({"detail": "body must be {\"text\": str, \"text_pair\": str?}"}, status_code=422)
                if not serve.get_multiplexed_model_id():
                    return JSONResponse({"detail": "name the adapter in the serve_multiplexed_model_id header"}, status_code=422)
                return await self._predict(body)
            except ServeError as e:
                return JSONResponse({"detail": str(e)}, status_code=e.status)

    return AdapterEngine.bind(settings, refs)


def run(config: EngineConfig, refs: dict[str, str], replicas: int = 2, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Start (or join) Ray, serve the app over HTTP until interrupted."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(address="auto" if _cluster_running() else None, include_dashboard=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(config, refs, replicas), name="adapterkit", route_prefix="/")
    print(f"Ray Serve: {replicas} replicas, {len(refs)} adapters on http://{host}:{port}/", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()


def _cluster_running() -> bool:
    import os

    return bool(os.environ.get("RAY_ADDRESS"))
