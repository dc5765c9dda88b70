"""A small client of `adapterkit serve` (httpx; torch-free).

    client = Client("http://127.0.0.1:8080")
    client.predict(["a fine film", "a dull one"], adapter="sst2")
    client.predict([{"adapter": "cola", "text": "Him went."}, {"adapter": "sst2", "text": "great"}])
"""
from __future__ import annotations

import httpx

from adapterkit.serve import errors


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def predict(self, inputs: list, adapter: str | None = None) -> list[dict]:
        """Predictions for texts or {"adapter", "text", "text_pair"} dicts, in order."""
        return self._call("POST", "/v1/predict", json={"adapter": adapter, "inputs": list(inputs)})["predictions"]

    def adapters(self) -> list[dict]:
        return self._call("GET", "/v1/adapters")["adapters"]

    def load(self, name: str, ref: str | None = None) -> dict:
        return self._call("POST", f"/v1/adapters/{name}", json={"ref": ref})

    def unload(self, name: str) -> None:
        self._call("DELETE", f"/v1/adapters/{name}")

    def ready(self) -> bool:
        return self._http.get("/ready").status_code == 200

    def metrics(self) -> str:
        return self._http.get("/metrics").text

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs) -> dict:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise errors.ServeError(f"cannot reach {self._http.base_url}: {e}") from None
        if response.status_code >= 400:
            try:
                body = response.json()
                detail, error = body.get("detail", response.text), body.get("error")
            except (ValueError, AttributeError):
                detail, error = response.text, None
            raise errors.ServeError.from_response(response.status_code, {"error": error},
                                                  f"HTTP {response.status_code}: {detail}", errors.BY_STATUS)
        return response.json()
