"""The engine on Ray Serve: a local Ray instance, 2 replicas, adapters as multiplexed models;
predictions over the HTTP proxy and a deployment handle equal the in-process engine's."""
from __future__ import annotations

import pytest

from tests.serve_support import free_port, make_adapters

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")

pytestmark = pytest.mark.slow


def test_two_replicas_serve_multiplexed_adapters(tiny_bert_dir, tmp_path):
    import httpx
    from ray import serve

    from adapterkit.serve import Engine, EngineConfig
    from adapterkit.serve.ray_serve import build_app

    adapters = {n: str(p) for n, p in make_adapters(tiny_bert_dir, tmp_path).items()}
    config = EngineConfig(model=str(tiny_bert_dir), max_wait_ms=10, max_adapters=2)
    texts = ["a fine film", "him went home", "dull"]
    local = Engine(config, adapters=adapters)
    expected = {(n, t): local.predict([{"adapter": n, "text": t}])[0] for n in adapters for t in texts}
    local.close()
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        handle = serve.run(build_app(config, adapters, replicas=2), name="adapterkit-test", route_prefix="/")
        status = serve.status().applications["adapterkit-test"].deployments["AdapterEngine"]
        assert status.replica_states.get("RUNNING") == 2
        for (name, text), want in expected.items():
            got = handle.options(multiplexed_model_id=name).predict.remote({"text": text}).result(timeout_s=120)
            assert got.get("scores", got.get("value")) == pytest.approx(want.get("scores", want.get("value")), abs=1e-5)
        r = httpx.post(f"http://127.0.0.1:{port}/", json={"text": texts[0]},
                       headers={"serve_multiplexed_model_id": "topic"}, timeout=120)
        assert r.status_code == 200 and r.json()["scores"] == pytest.approx(expected[("topic", texts[0])]["scores"], abs=1e-5)
        r = httpx.post(f"http://127.0.0.1:{port}/", json={"text": "x"}, headers={"serve_multiplexed_model_id": "nope"}, timeout=120)
        assert r.status_code == 404 and "'nope'" in r.json()["detail"]
    finally:
        serve.shutdown()
        ray.shutdown()
