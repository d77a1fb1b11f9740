"""What the administration endpoints (``/key/*``, ``/team/*``, ``/user/*``, ``/spend/*``) share: the database, the
in-memory keys, reading a body, and the steps every kind of record goes through (create, find, update, delete).

The endpoints orchestrate only: field rules live in ``keys.fields``, budgets in ``keys.manager``, storage in ``db``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
from aiohttp import web

from mmproxy.db import Database
from mmproxy.db.base import KeyRecord, R, Record, TeamRecord, UserRecord
from mmproxy.errors import ProxyError, bad_request
from mmproxy.keys import fields
from mmproxy.keys.manager import Keys, display_name, hash_key
from mmproxy.keys.states import same_period
from mmproxy.server.gateway import Gateway
from mmproxy.validation import query_int

_JSON = "application/json"
MAX_LIMIT = 1000

Owner = TypeVar("Owner", TeamRecord, UserRecord)
T = TypeVar("T")


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON)


MAX_PAGE = 2**31 - 1  # pages times their size stay an offset the database's 64-bit integers hold


def page(query: Any) -> tuple[int, int]:
    """``page`` (from 1) and ``size`` (at most ``MAX_LIMIT``) of a list request."""
    return (query_int(query.get("page"), "page", 1, MAX_PAGE),
            min(query_int(query.get("size") or query.get("page_size"), "size", 100, MAX_PAGE), MAX_LIMIT))


def text_id(value: Any, param: str) -> str:
    """A required id in a request: a non-empty string."""
    if not isinstance(value, str) or not value:
        raise bad_request(f"{param} is required: a non-empty string", param=param)
    return value


class Management:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @property
    def _db(self) -> Database:
        db = self.gateway.db
        if db is None:
            raise ProxyError(400, "no database: set general_settings.master_key or enable spend logs",
                             code="no_database")
        return db

    @property
    def _keys(self) -> Keys:
        keys = self.gateway.keys
        assert keys is not None  # require_admin has checked
        return keys

    async def fresh_db(self) -> Database:
        """The database, with every queued ledger row written: what a report reads next is complete."""
        await self._flush()
        return self._db

    async def db_call(self, pending: Awaitable[T]) -> T:
        """A database operation; a database that is down or failing is a 503 that says so (without the password
        of its URL), not an internal error. ValueError is the database's verdict on the record (a taken id) and
        passes through."""
        try:
            return await pending
        except (ProxyError, ValueError):
            raise
        except Exception as exc:
            raise ProxyError(503, f"the database is unavailable: {self._db.describe_error(exc)}",
                             type="service_unavailable", code="database_unavailable") from None

    async def _flush(self) -> None:
        """Write queued ledger rows before a read, so a client sees its own requests."""
        ledger = self.gateway.ledger
        if ledger is not None:
            await self.db_call(ledger.flush())

    async def _body(self, request: web.BaseRequest) -> dict[str, Any]:
        return (await self.gateway.pipeline.read_json(request))[0]

    # -- records ---------------------------------------------------------------------------------
    async def _stored(self, kind: type[R], ident: str, param: str) -> R:
        """A stored record with this process's spend when it is ahead of the ledger's last write; 404 if unknown."""
        record = await self.db_call(self._db.get_record(kind, ident))
        if record is None:
            raise ProxyError(404, f"no such {kind.KIND}: {ident!r}", code=f"{kind.KIND}_not_found", param=param)
        self._catch_up(record)
        return record

    def _catch_up(self, record: Record) -> None:
        state = self._keys.known(type(record), record.ident)
        if state is not None and same_period(record.budget_reset_at, state.record.budget_reset_at):
            record.spend = max(record.spend, state.record.spend)

    async def _insert(self, record: Record, param: str) -> None:
        """Store a new record and serve it at once; 400 when its id is taken (as LiteLLM answers)."""
        try:
            await self.db_call(self._db.insert_record(record))
        except ValueError:
            raise ProxyError(400, f"{record.KIND} {record.ident!r} already exists", code=f"{record.KIND}_exists",
                             param=param) from None
        self._keys.add(record)

    async def _create_owner(self, body: dict[str, Any], spec: fields.Spec, kind: type[Owner], param: str
                            ) -> tuple[Owner, list[str]]:
        """A new team or user from ``body``: its id as given (or a new UUID), the fields ``spec`` allows."""
        now = time.time()
        ident = body.get(param)
        ident = str(uuid.uuid4()) if ident is None else text_id(ident, param)
        changes, ignored = fields.parse_fields(body, now, spec)
        await self._check_teams(changes)
        record = blank(kind, ident, now)
        for name, value in changes.items():
            setattr(record, name, value)
        await self._insert(record, param)
        return record, ignored

    async def create_key(self, clear: str, changes: dict[str, Any], now: float) -> KeyRecord:
        """Store a new key with ``changes``; its team must exist, its user is made when new (as LiteLLM does)."""
        record = KeyRecord(
            key_hash=hash_key(clear), key_name=display_name(clear), key_alias=None, team_id=None, user_id=None,
            models=[], max_budget=None, budget_duration=None, budget_reset_at=None, spend=0.0, rpm_limit=None,
            tpm_limit=None, metadata={}, expires=None, created_at=now,
        )
        for name, value in changes.items():
            setattr(record, name, value)
        if (self._keys.known(KeyRecord, record.key_hash) is not None
                or await self.db_call(self._db.get_key(record.key_hash)) is not None):
            raise ProxyError(409, "this key already exists", code="key_exists", param="key")
        await self._check_owners(changes, now)
        await self.db_call(self._db.insert_key(record))
        self._keys.add(record)
        return record

    async def _list(self, kind: type[R], query: Any) -> tuple[list[R], int, int]:
        """A page of records, each with this process's spend: (records, page, size)."""
        number, size = page(query)
        records = await self.db_call(self._db.list_records(kind, size, (number - 1) * size))
        for record in records:
            self._catch_up(record)
        return records, number, size

    async def _update_owner(self, request: web.BaseRequest, spec: fields.Spec, kind: type[Owner],
                            param: str) -> web.Response:
        """``/team/update`` and ``/user/update``: LiteLLM answers the id and the record as ``data``."""
        await self.gateway.require_admin(request)
        body = await self._body(request)
        ident = text_id(body.get(param), param)
        changes, ignored = fields.parse_fields(body, time.time(), spec)
        await self._check_teams(changes)
        record = await self._update(await self._stored(kind, ident, param), param, changes)
        return json_response({param: ident, "data": fields.owner_view(record), "ignored_fields": ignored})

    async def _update(self, record: R, param: str, changes: dict[str, Any]) -> R:
        """Store ``changes`` (checked by the caller) to a stored record and serve it at once; 404 if it is gone."""
        kind = type(record)
        updated = await self.db_call(self._db.update_record(kind, record.ident, changes)) if changes else record
        if updated is None:
            raise ProxyError(404, f"no such {kind.KIND}: {record.ident!r}", code=f"{kind.KIND}_not_found",
                             param=param)
        self._keys.add(updated)  # keeps this process's spend when it is ahead
        return updated

    async def _check_owners(self, changes: dict[str, Any], now: float) -> None:
        """A key's team must exist (400 otherwise); its user is made when new, as LiteLLM does."""
        await self._check_teams(changes)
        user_id = changes.get("user_id")
        if user_id and self._keys.known(UserRecord, user_id) is None \
                and await self.db_call(self._db.get_record(UserRecord, user_id)) is None:
            user = blank(UserRecord, user_id, now)
            try:
                await self.db_call(self._db.insert_record(user))
            except ValueError:
                return  # made by another request meanwhile
            self._keys.add(user)

    async def _check_teams(self, changes: dict[str, Any]) -> None:
        """400 for a team that does not exist: a key's ``team_id``, a user's ``teams``."""
        wanted = [("team_id", changes["team_id"])] if changes.get("team_id") else []
        wanted += [("teams", team) for team in changes.get("teams", ())]
        for param, team in wanted:
            if self._keys.known(TeamRecord, team) is None \
                    and await self.db_call(self._db.get_record(TeamRecord, team)) is None:
                raise bad_request(f"team {team!r} does not exist: create it with /team/new first", param=param)

    async def _owned_keys(self, column: str, ident: str) -> list[KeyRecord]:
        """The keys of a team or user (``column``: team_id or user_id), each with this process's spend."""
        records = await self.db_call(self._db.list_records(KeyRecord, MAX_LIMIT, 0, **{column: ident}))
        for record in records:
            self._catch_up(record)
        return records

    async def _delete_owners(self, request: web.BaseRequest, kind: type[Owner], param: str, column: str
                             ) -> web.Response:
        """``/team/delete`` and ``/user/delete``: the teams or users listed under ``param`` and their keys, as
        LiteLLM does. Every id must exist, so a typo deletes nothing."""
        await self.gateway.require_admin(request)
        idents = (await self._body(request)).get(param)
        if not isinstance(idents, list) or not idents or not all(isinstance(i, str) and i for i in idents):
            raise bad_request(f"{param} must be a non-empty list of ids", param=param)
        for ident in idents:
            await self._stored(kind, ident, param)
        hashes = [key.key_hash for ident in idents for key in await self._owned_keys(column, ident)]
        await self.db_call(self._db.delete_records(KeyRecord, hashes))
        self._keys.forget(KeyRecord, hashes)
        await self.db_call(self._db.delete_records(kind, idents))
        self._keys.forget(kind, idents)
        return json_response({f"deleted_{kind.KIND}s": idents, "deleted_keys": hashes})


def blank(kind: type[Owner], ident: str, now: float) -> Owner:
    """A new team or user with no limits, before the request's own fields."""
    own: dict[str, Any] = ({"team_id": ident, "team_alias": None} if kind is TeamRecord
                           else {"user_id": ident, "user_email": None, "user_alias": None, "teams": []})
    return kind(**own, models=[], max_budget=None, budget_duration=None, budget_reset_at=None, spend=0.0,
                rpm_limit=None, tpm_limit=None, metadata={}, created_at=now)
