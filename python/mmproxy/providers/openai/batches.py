"""The Files and Batch endpoints of one OpenAI-wire deployment: the client's lines, renamed, run there as they are."""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from mmproxy.errors import ProxyError
from mmproxy.providers.batches import ENDPOINT, Fetch, UpstreamBatches, parse_lines
from mmproxy.providers.openai.adapter import OpenAIProvider


class OpenAIBatches(UpstreamBatches):
    # The batch's endpoint and its lines' url as the upstream names them.
    endpoint = ENDPOINT

    def __init__(self, provider: OpenAIProvider, fetch: Fetch) -> None:
        super().__init__(provider, fetch)
        self._openai = provider

    def _target(self, operation: str) -> str:
        return self._openai.endpoint(self._openai.base_path, operation)

    async def submit(self, lines: list[dict[str, Any]], name: str, metadata: dict[str, Any] | None
                     ) -> dict[str, Any]:
        model = self.provider.deployment.upstream_model
        data = b"".join(orjson.dumps({**line, "url": self.endpoint, "body": {**line["body"], "model": model}}) + b"\n"
                        for line in lines)
        file_id = await self._upload(data, name)
        payload: dict[str, Any] = {"input_file_id": file_id, "endpoint": self.endpoint, "completion_window": "24h"}
        if metadata is not None:
            payload["metadata"] = metadata
        return await self._batch("POST", self._target("batches"), payload)

    async def _batch(self, method: str, target: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """The upstream's batch object, its endpoint named as the gateway's clients name it."""
        return {**await self.call_json(method, target, payload), "endpoint": ENDPOINT}

    async def _upload(self, data: bytes, filename: str) -> str:
        boundary = secrets.token_hex(16)
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n' \
               f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n' \
               f"Content-Type: application/jsonl\r\n\r\n"
        body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
        raw = await self.call("POST", self._target("files"), body, f"multipart/form-data; boundary={boundary}")
        file_id = self.provider.load_object(raw).get("id")
        if not isinstance(file_id, str):
            raise ProxyError(502, f"upstream {self.provider.deployment.id} returned a file without an id",
                             type="upstream_error", code="upstream_bad_response")
        return file_id

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        return await self._batch("GET", self._target(f"batches/{batch_id}"))

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        return await self._batch("POST", self._target(f"batches/{batch_id}/cancel"), {})

    async def results(self, batch: dict[str, Any], custom_ids: list[str]
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return await self._lines(batch.get("output_file_id")), await self._lines(batch.get("error_file_id"))

    async def _lines(self, file_id: Any) -> list[dict[str, Any]]:
        if not isinstance(file_id, str):
            return []
        return parse_lines(await self.call("GET", self._target(f"files/{file_id}/content")))
