"""The serving engine and `adapterkit serve` against real servers on 127.0.0.1: mixed-adapter
predictions equal each adapter run alone, the resident cache stays bounded, and every fault the
issue lists gets its status (404, 422, 413/truncation, 503 + Retry-After, 401, corrupt/foreign
adapters while others keep serving, unload while in flight, SIGTERM drains)."""
from __future__ import annotations

import gc
import signal
import threading
import weakref

import httpx
import pytest
import torch

from tests.serve_support import (ADAPTERS, TOKEN, ThreadServer, corrupt_adapter, foreign_adapter, make_adapters,
                                 start_process)

TEXTS = ["the film was a delight", "him went to the store yesterday", "an utterly dull and plodding affair",
         "what a wonderful, surprising, funny and tender story about two old friends"]


@pytest.fixture(scope="module")
def adapters(tiny_bert_dir, tmp_path_factory):
    return make_adapters(tiny_bert_dir, tmp_path_factory.mktemp("serve-adapters"))


@pytest.fixture(scope="module")
def engine(tiny_bert_dir, adapters):
    from adapterkit.serve import Engine, EngineConfig

    eng = Engine(EngineConfig(model=str(tiny_bert_dir), max_wait_ms=20, max_length=64),
                 adapters={n: str(p) for n, p in adapters.items()})
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def server(engine):
    srv = ThreadServer(engine)
    yield srv
    srv.stop()


def alone(model_dir, folder, task, text):
    """The adapter's own model (backbone + adapter + head) on one input."""
    import adapterkit as ak
    from adapterkit.backbone import load_model, load_tokenizer

    model = load_model(str(model_dir), num_labels=len(task["labels"] or [0])).eval()
    ak.load_adapter(model, folder)
    with torch.no_grad():
        return model(**load_tokenizer(str(model_dir))(text, return_tensors="pt")).logits[0]


def test_mixed_batch_predictions_equal_each_adapter_alone(engine, adapters, tiny_bert_dir):
    inputs = [{"adapter": name, "text": text} for text in TEXTS for name in ADAPTERS]
    predictions = engine.predict(inputs)
    for item, got in zip(inputs, predictions):
        task = ADAPTERS[item["adapter"]][3]
        expected = alone(tiny_bert_dir, adapters[item["adapter"]], task, item["text"])
        if task["type"] == "regression":
            assert got["value"] == pytest.approx(float(expected[0]), abs=1e-5)
        else:
            torch.testing.assert_close(torch.tensor(got["scores"]), expected.softmax(-1), atol=1e-5, rtol=0)
            assert got["label"] == task["labels"][int(expected.argmax())]
    assert engine.metrics.batch_adapters.collect()[0].samples  # steps mixed adapters


def test_cache_bounds_residents_under_a_stream_over_more_adapters(tiny_bert_dir, adapters, tmp_path):
    from adapterkit.model import get_bank, list_adapters
    from adapterkit.serve import Engine, EngineConfig

    refs = {f"a{i}": str(adapters[list(ADAPTERS)[i % 3]]) for i in range(10)}
    eng = Engine(EngineConfig(model=str(tiny_bert_dir), max_adapters=3, max_wait_ms=0), adapters=refs)
    try:
        seen, gone = [], []
        for rnd in range(2):
            for name in refs:
                eng.predict([{"adapter": name, "text": TEXTS[0]}])
                assert len(eng.cache) <= 3 and len(list_adapters(eng.model)) <= 3
                if rnd == 0:
                    seen.append(weakref.ref(get_bank(eng.model).adapters[name]))
        gc.collect()
        gone = [r for r in seen if r() is None]
        assert len(gone) >= 7  # evicted adapters' weights are freed, not just forgotten
        assert eng.cache.evictions == 20 - 3 and eng.cache.misses == 20
        budget = Engine(EngineConfig(model=str(tiny_bert_dir), max_memory_mb=eng.cache.bytes / 2**20 * 0.7, max_wait_ms=0),
                        adapters=refs)
        for name in refs:
            budget.predict([{"adapter": name, "text": TEXTS[1]}])
            assert budget.cache.bytes <= budget.cache.max_bytes
        budget.close()
    finally:
        eng.close()


def test_predict_routes_list_metrics_and_openapi(server):
    body = {"inputs": [{"adapter": "cola", "text": TEXTS[0]}, {"adapter": "stsb", "text": TEXTS[1], "text_pair": TEXTS[2]},
                       "a plain text for the default adapter"], "adapter": "topic"}
    r = httpx.post(f"{server.url}/v1/predict", json=body, timeout=60)
    assert r.status_code == 200, r.text
    cola, stsb, topic = r.json()["predictions"]
    assert cola["label"] in ADAPTERS["cola"][3]["labels"] and len(cola["scores"]) == 2
    assert isinstance(stsb["value"], float) and topic["adapter"] == "topic" and len(topic["scores"]) == 3
    listed = {a["name"]: a for a in httpx.get(f"{server.url}/v1/adapters").json()["adapters"]}
    assert listed["topic"]["labels"] == ["world", "sports", "tech"] and listed["stsb"]["type"] == "regression"
    metrics = httpx.get(f"{server.url}/metrics").text
    for name in ("adapterkit_requests_total", "adapterkit_request_seconds_bucket", "adapterkit_batch_size_bucket",
                 "adapterkit_queue_depth", 'adapterkit_cache_total{event="miss"}', "adapterkit_resident_adapters"):
        assert name in metrics
    assert "/v1/predict" in httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}


def test_unknown_adapter_404_and_malformed_422(server):
    r = httpx.post(f"{server.url}/v1/predict", json={"inputs": [{"adapter": "nope", "text": "x"}]})
    assert r.status_code == 404 and "'nope'" in r.json()["detail"]
    r = httpx.post(f"{server.url}/v1/predict", json={"inputs": [{"adapter": "cola"}]})
    assert r.status_code == 422 and any(e["loc"][-1] == "text" and e["type"] == "missing" for e in r.json()["detail"])
    r = httpx.post(f"{server.url}/v1/predict", json={"inputs": "not a list"})
    assert r.status_code == 422 and "inputs" in r.json()["detail"][0]["loc"]
    r = httpx.post(f"{server.url}/v1/predict", json={"inputs": ["no adapter anywhere"]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "inputs", 0, "adapter"]
    r = httpx.post(f"{server.url}/v1/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_long_input_truncated_and_reported_or_413(server, tiny_bert_dir):
    long = " ".join(["word"] * 200)
    r = httpx.post(f"{server.url}/v1/predict", json={"inputs": [{"adapter": "cola", "text": long}, {"adapter": "cola", "text": "short"}]})
    assert r.status_code == 200 and [p["truncated"] for p in r.json()["predictions"]] == [True, False]
    from adapterkit.serve import Engine, EngineConfig

    strict = Engine(EngineConfig(model=str(tiny_bert_dir), max_length=64, truncate=False))
    strict.register("cola", server_ref(server, "cola"))
    srv = ThreadServer(strict)
    try:
        r = httpx.post(f"{srv.url}/v1/predict", json={"inputs": [{"adapter": "cola", "text": long}]})
        assert r.status_code == 413 and "at most 64" in r.json()["detail"]
    finally:
        srv.stop()


def server_ref(server, name):
    return next(a["ref"] for a in httpx.get(f"{server.url}/v1/adapters").json()["adapters"] if a["name"] == name)


def test_load_unload_need_the_token_and_bad_adapters_leave_others_serving(server, adapters, tmp_path):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    ref = {"ref": str(adapters["cola"])}
    assert httpx.post(f"{server.url}/v1/adapters/cola2", json=ref).status_code == 401
    assert httpx.post(f"{server.url}/v1/adapters/cola2", json=ref, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.delete(f"{server.url}/v1/adapters/cola").status_code == 401
    r = httpx.post(f"{server.url}/v1/adapters/cola2", json=ref, headers=auth, timeout=60)
    assert r.status_code == 200 and r.json()["resident"] is True
    for bad, message in ((corrupt_adapter(adapters["cola"], tmp_path), "safetensors"),
                         (foreign_adapter(tmp_path), "does not fit")):
        r = httpx.post(f"{server.url}/v1/adapters/bad", json={"ref": str(bad)}, headers=auth, timeout=60)
        assert r.status_code == 422 and message in r.json()["detail"], r.text
    names = {a["name"] for a in httpx.get(f"{server.url}/v1/adapters").json()["adapters"]}
    assert "bad" not in names and {"cola", "cola2", "topic", "stsb"} <= names
    r = httpx.post(f"{server.url}/v1/predict", json={"inputs": [{"adapter": n, "text": "ok"} for n in ("cola", "cola2", "topic")]})
    assert r.status_code == 200
    a, b, _ = r.json()["predictions"]
    assert a["scores"] == pytest.approx(b["scores"], abs=1e-6)  # same files under two names
    assert httpx.delete(f"{server.url}/v1/adapters/cola2", headers=auth).status_code == 200
    r = httpx.post(f"{server.url}/v1/predict", json={"inputs": [{"adapter": "cola2", "text": "ok"}]})
    assert r.status_code == 404


def test_queue_full_503_with_retry_after_and_unload_while_in_flight(tiny_bert_dir, adapters):
    from adapterkit.serve import Engine, EngineConfig

    eng = Engine(EngineConfig(model=str(tiny_bert_dir), max_queue=2, max_wait_ms=1500, max_batch_size=64),
                 adapters={n: str(p) for n, p in adapters.items()})
    srv = ThreadServer(eng)
    try:
        results = [None] * 6
        def send(i):
            results[i] = httpx.post(f"{srv.url}/v1/predict", json={"inputs": [{"adapter": "cola", "text": TEXTS[0]}]}, timeout=60)
        threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in results)
        assert codes.count(200) == 2 and codes.count(503) == 4  # nothing dropped: every request answered
        assert all(r.headers["retry-after"] for r in results if r.status_code == 503)
        # an input waiting in the queue when its adapter is unloaded fails cleanly with 404
        pending = {}
        waiter = threading.Thread(target=lambda: pending.update(r=httpx.post(
            f"{srv.url}/v1/predict", json={"inputs": [{"adapter": "topic", "text": "x"}]}, timeout=60)))
        waiter.start()
        while eng.queue_depth() == 0:
            threading.Event().wait(0.01)
        assert httpx.delete(f"{srv.url}/v1/adapters/topic", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60).status_code == 200
        waiter.join()
        assert pending["r"].status_code == 404 and "unloaded" in pending["r"].json()["detail"]
    finally:
        srv.stop()
        eng.close()


def test_sigterm_drains_in_flight_requests_then_exits(tiny_bert_dir, adapters):
    proc, url = start_process(tiny_bert_dir, adapters, "--max-wait-ms", "1500", "--max-batch-size", "64")
    try:
        results = []
        def send(name):
            results.append(httpx.post(f"{url}/v1/predict", json={"inputs": [{"adapter": name, "text": TEXTS[1]}]}, timeout=60))
        threads = [threading.Thread(target=send, args=(name,)) for name in ("cola", "topic", "stsb", "cola")]
        for t in threads:
            t.start()
        deadline = threading.Event()
        while "adapterkit_queue_depth 4.0" not in httpx.get(f"{url}/metrics").text:
            deadline.wait(0.02)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join()
        assert [r.status_code for r in results] == [200] * 4
        # uvicorn re-raises the signal once it has shut down gracefully (the conventional exit status)
        assert proc.wait(60) in (0, -signal.SIGTERM)
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_client_and_predict_server_equal_local_predict(server, adapters, tmp_path):
    import json

    from typer.testing import CliRunner

    from adapterkit.cli import _register_all, app
    from adapterkit.serve import Client

    _register_all()
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"sentence": t}) + "\n" for t in TEXTS))
    runner = CliRunner()
    local, remote = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
    for args in (["--adapter", str(adapters["cola"]), "--task", "cola", "--output", str(local)],
                 ["--server", server.url, "--adapter", "cola", "--output", str(remote)]):
        result = runner.invoke(app, ["predict", "--input", str(rows), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    a, b = ([json.loads(line) for line in f.read_text().splitlines()] for f in (local, remote))
    assert [r["label_id"] for r in a] == [r["label_id"] for r in b]
    assert [r["label"] for r in a] == [r["label"] for r in b]
    assert [r["probability"] for r in a] == pytest.approx([r["probability"] for r in b], abs=1e-5)
    with Client(server.url) as client:
        assert [p["label_id"] for p in client.predict(TEXTS, adapter="cola")] == [r["label_id"] for r in a]
        with pytest.raises(Exception, match="404.*'nope'"):
            client.predict(["x"], adapter="nope")


def test_hub_references_and_multitask_bundle_branches(tiny_bert_dir, adapters, tmp_path):
    import copy

    import adapterkit as ak
    from adapterkit.backbone import load_model, load_tokenizer
    from adapterkit.model import get_bank, head_parameters
    from adapterkit.serve import AdapterLoadError, Engine, EngineConfig
    from adapterkit.multitask.model import MultiTaskModel
    from adapterkit.multitask.io import save_multitask

    ak.push_adapter(adapters["cola"], "team/cola:v1", hub=str(tmp_path / "hub"))
    base = load_model(str(tiny_bert_dir), num_labels=3).eval()
    tuned = copy.deepcopy(base)
    ak.add_adapter(tuned, "t", ak.BottleneckConfig(bottleneck_dim=4, layers=[1], init="houlsby"))
    layered = copy.deepcopy(base)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in [*get_bank(tuned).adapters["t"].parameters(), *head_parameters(tuned).values(),
                  *layered.bert.encoder.layer[1].parameters()]:
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    merged = MultiTaskModel.from_backbone(base)
    merged.add_model("t", tuned, 1)
    merged.add_model("own", layered, 1)
    save_multitask(merged, tmp_path / "bundle")

    eng = Engine(EngineConfig(model=str(tiny_bert_dir), hub=str(tmp_path / "hub"), max_wait_ms=0))
    try:
        eng.load("from_hub", "hub:team/cola:v1")
        eng.load("from_folder", str(adapters["cola"]))
        eng.load("branch", f"{tmp_path / 'bundle'}#t")
        a, b, c = eng.predict([{"adapter": n, "text": TEXTS[0]} for n in ("from_hub", "from_folder", "branch")])
        assert a["scores"] == b["scores"]
        with torch.no_grad():
            alone_t = tuned(**load_tokenizer(str(tiny_bert_dir))(TEXTS[0], return_tensors="pt")).logits[0]
        torch.testing.assert_close(torch.tensor(c["scores"]), alone_t.softmax(-1), atol=1e-5, rtol=0)
        with pytest.raises(AdapterLoadError, match="'layers' branch"):
            eng.load("own", f"{tmp_path / 'bundle'}#own")
        with pytest.raises(AdapterLoadError, match="no task 'zz'"):
            eng.load("zz", f"{tmp_path / 'bundle'}#zz")
    finally:
        eng.close()


def test_glue_runs_are_served_with_the_label_names_predict_writes(tmp_path):
    import json

    from adapterkit.serve.loading import _run_config, _task

    (tmp_path / "run_config.json").write_text(json.dumps({"task": "cola"}))
    assert _task({}, _run_config(tmp_path), 2, "cola-run") == {"type": "classification",
                                                                "labels": ["unacceptable", "acceptable"]}
    (tmp_path / "run_config.json").write_text(json.dumps({"task": "stsb"}))
    assert _task({}, _run_config(tmp_path), 1, "stsb-run") == {"type": "regression", "labels": None}
    # what `adapterkit train --task cola` writes: the manifest names the preset, labels as in the files
    manifest = {"task": {"type": "classification", "labels": ["0", "1"], "preset": "cola"}}
    assert _task(manifest, {}, 2, "cola-run")["labels"] == ["unacceptable", "acceptable"]


@pytest.mark.parametrize("content, message", [(b"\xff\xfe\x00", "not UTF-8"), (b"[" * 100_000, "nested too deeply"),
                                              (b"[1, 2]", "must be an object"), (b'{"task": 3}', "task")])
def test_a_corrupt_run_config_is_one_error_naming_the_file(tmp_path, content, message):
    from adapterkit.errors import AdapterkitError
    from adapterkit.serve.loading import _run_config

    (tmp_path / "run_config.json").write_bytes(content)
    with pytest.raises(AdapterkitError, match=message) as caught:
        _run_config(tmp_path)
    assert str(tmp_path / "run_config.json") in str(caught.value)


def test_a_run_trained_with_adapterdrop_is_served_with_its_k(tiny_bert_dir, adapters, tmp_path):
    """A run folder's --drop-layers k (as `eval` scores it) holds for its rows in a mixed batch;
    the other adapters' rows keep every layer; a k the backbone cannot take is a 422 at load."""
    import json
    import shutil

    import adapterkit as ak
    from adapterkit.backbone import load_model, load_tokenizer
    from adapterkit.compose.drop import set_adapter_drop
    from adapterkit.serve import Engine, EngineConfig

    dropped = tmp_path / "topic-k1"
    shutil.copytree(adapters["topic"], dropped)  # per-layer adapters, non-zero in every layer
    (dropped / "run_config.json").write_text(json.dumps({"drop_layers": 1}))
    robust = tmp_path / "topic-robust"
    shutil.copytree(dropped, robust)
    (robust / "run_config.json").write_text(json.dumps({"drop_layers": 1, "drop_robust": True}))
    too_deep = tmp_path / "topic-k9"
    shutil.copytree(dropped, too_deep)
    (too_deep / "run_config.json").write_text(json.dumps({"drop_layers": 9}))

    def scored(k):
        model = load_model(str(tiny_bert_dir), num_labels=3).eval()
        ak.load_adapter(model, adapters["topic"])
        set_adapter_drop(model, k)
        with torch.no_grad():
            return model(**load_tokenizer(str(tiny_bert_dir))(TEXTS[0], return_tensors="pt")).logits[0].softmax(-1)

    refs = {"k1": str(dropped), "robust": str(robust), "plain": str(adapters["topic"]), "deep": str(too_deep)}
    eng = Engine(EngineConfig(model=str(tiny_bert_dir), max_wait_ms=20), adapters=refs)
    try:
        got = eng.predict([{"adapter": name, "text": TEXTS[0]} for name in ("k1", "plain", "robust")])
        torch.testing.assert_close(torch.tensor(got[0]["scores"]), scored(1), atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.tensor(got[1]["scores"]), scored(0), atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.tensor(got[2]["scores"]), scored(0), atol=1e-5, rtol=0)  # robust: k = 0
        assert not torch.allclose(scored(0), scored(1), atol=1e-4)  # the k changes the output
        from adapterkit.serve.errors import AdapterLoadError

        with pytest.raises(AdapterLoadError, match="drop_layers 9: the model has 2 layers"):
            eng.predict([{"adapter": "deep", "text": TEXTS[0]}])
    finally:
        eng.close()
