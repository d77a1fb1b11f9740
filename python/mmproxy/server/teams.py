"""LiteLLM's ``/team/*`` endpoints: teams whose keys share a model list, rpm/tpm limits and a budget."""

from __future__ import annotations

from aiohttp import web

from mmproxy.db.base import TeamRecord
from mmproxy.keys import fields
from mmproxy.pipeline.call import Call
from mmproxy.server.management import Management, json_response, text_id


class Teams(Management):
    async def new(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        await self.gateway.require_admin(request)
        record, ignored = await self._create_owner(await self._body(request), fields.TEAM, TeamRecord, "team_id")
        return json_response({**fields.owner_view(record), "ignored_fields": ignored})

    async def info(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """The team, its spend and its keys (LiteLLM's ``team_info``/``keys``; mmproxy has no memberships)."""
        await self.gateway.require_admin(request)
        team_id = text_id(request.query.get("team_id"), "team_id")
        record = await self._stored(TeamRecord, team_id, "team_id")
        keys = await self._owned_keys("team_id", team_id)
        return json_response({"team_id": team_id, "team_info": fields.owner_view(record),
                              "keys": [fields.view(key) for key in keys], "team_memberships": []})

    async def update(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        return await self._update_owner(request, fields.TEAM, TeamRecord, "team_id")

    async def delete(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """Delete teams and their keys."""
        return await self._delete_owners(request, TeamRecord, "team_ids", "team_id")

    async def list(self, request: web.BaseRequest, call: Call) -> web.StreamResponse:
        """Every team, oldest first (LiteLLM answers a plain list)."""
        await self.gateway.require_admin(request)
        records = (await self._list(TeamRecord, request.query))[0]
        return json_response([fields.owner_view(record) for record in records])
