"""Request dependencies of the CRM's routers: its settings and who is acting."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from crm.config import CRMSettings
from cxkit.http.auth import Writer
from cxkit.http.deps import get_settings


async def get_actor(principal: Writer) -> str:
    """The name of the API key making a change (recorded as `changed_by`, `completed_by`...)."""
    return principal.name


SettingsDep = Annotated[CRMSettings, Depends(get_settings)]
ActorDep = Annotated[str, Depends(get_actor)]
