"""LiteLLM's ``/user/*`` endpoints: users whose keys share a model list, rpm/tpm limits and a budget."""

from __future__ import annotations

import time

from aiohttp import web

from mmproxy.db.base import TeamRecord, UserRecord
from mmproxy.errors import bad_request
from mmproxy.keys import durations, fields
from mmproxy.keys.manager import new_key
from mmproxy.pipeline.call import Call
from mmproxy.server.management import Management, json_response, text_id

_KEY_FIELDS = ("key_alias", "duration")  # of the key /user/new makes
_NEW_ONLY = frozenset({*_KEY_FIELDS, "auto_create_key"})  # what /user/new reads besides the user's fields


class Users(Management):
    async def new(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """A user and, unless ``auto_create_key`` is false, a key of theirs: the only time its clear value is shown
        (LiteLLM's ``NewUserResponse``: the user's fields plus ``key``)."""
        await self.gateway.require_admin(request)
        body = await self._body(request)
        auto_key = body.get("auto_create_key", True)
        if not isinstance(auto_key, bool):
            raise bad_request("auto_create_key must be true or false", param="auto_create_key")
        now = time.time()
        key_changes = fields.parse_fields({name: body[name] for name in _KEY_FIELDS if name in body}, now)[0]
        record, ignored = await self._create_owner(body, fields.USER, UserRecord, "user_id")
        out = {**fields.owner_view(record), "ignored_fields": [name for name in ignored if name not in _NEW_ONLY]}
        if auto_key:
            clear = new_key()
            key = await self.create_key(clear, {**key_changes, "user_id": record.user_id}, now)
            out.update({"key": clear, "token": key.key_hash, "key_name": key.key_name, "key_alias": key.key_alias,
                        "expires": durations.iso(key.expires)})
        return json_response(out)

    async def info(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """The user, their spend, their keys and their teams."""
        await self.gateway.require_admin(request)
        user_id = text_id(request.query.get("user_id"), "user_id")
        record = await self._stored(UserRecord, user_id, "user_id")
        keys = await self._owned_keys("user_id", user_id)
        teams = [await self.db_call(self._db.get_record(TeamRecord, team_id)) for team_id in record.teams]
        return json_response({"user_id": user_id, "user_info": fields.owner_view(record),
                              "keys": [fields.view(key) for key in keys],
                              "teams": [fields.owner_view(team) for team in teams if team is not None]})

    async def update(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        return await self._update_owner(request, fields.USER, UserRecord, "user_id")

    async def delete(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """Delete users and their keys."""
        return await self._delete_owners(request, UserRecord, "user_ids", "user_id")

    async def list(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        await self.gateway.require_admin(request)
        records, number, size = await self._list(UserRecord, request.query)
        return json_response({"users": [fields.owner_view(record) for record in records], "page": number,
                              "page_size": size})
