"""What each line of a finished batch cost: the deployment's prices less the provider's batch discount."""

from __future__ import annotations

from typing import Any

from mmproxy import cost
from mmproxy.config import Deployment
from mmproxy.spend.record import RequestRecord


def batch_discount(deployment: Deployment) -> float:
    """Fraction taken off the standard price for batch requests (0.5: half price; 0: none known)."""
    return deployment.batch_discount or 0.0


def line_record(request_id: str, line: dict[str, Any], deployment: Deployment, model: str) -> RequestRecord:
    """One ledger row for one output line: its usage priced at the batch rate, its status as the upstream gave it."""
    record = RequestRecord(request_id, "batch")
    record.requested_model = record.model_group = model
    record.deployment, record.provider, record.tier = deployment.id, deployment.provider, deployment.tier
    response = line.get("response")
    response = response if isinstance(response, dict) else {}
    status = response.get("status_code")
    record.status = status if isinstance(status, int) else 500
    body = response.get("body")
    usage = body.get("usage") if isinstance(body, dict) else None
    if record.status >= 400 or not isinstance(usage, dict):
        error = line.get("error")
        record.error_code = str(error.get("code")) if isinstance(error, dict) else f"upstream_{record.status}"
        if record.status < 400:
            record.status = 502  # answered, but without the usage it must be priced by
        return record
    prompt, completion, cached, written = cost.usage_tokens(usage)
    record.prompt_tokens, record.completion_tokens = prompt, completion
    record.cached_tokens, record.cache_write_tokens = cached, written
    priced = cost.price(deployment, prompt, completion, cached, written)
    if priced is not None:
        keep = 1.0 - batch_discount(deployment)
        record.cost_usd, record.saved_usd = priced[0] * keep, priced[1] * keep
    return record


def lines_to_records(batch_id: str, lines: list[dict[str, Any]], deployment: Deployment, model: str,
                     owner: dict[str, str | None]) -> list[RequestRecord]:
    """Ledger rows for every output and error line of ``batch_id``, attributed to the key that created it."""
    records = []
    for line in lines:
        record = line_record(f"{batch_id}:{line.get('custom_id')}", line, deployment, model)
        record.key_hash, record.key_alias, record.team_id = owner["key_hash"], owner["key_alias"], owner["team_id"]
        records.append(record)
    return records
