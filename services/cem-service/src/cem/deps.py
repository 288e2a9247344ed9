"""Request dependencies of the CEM's routers: its settings."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from cem.config import CEMSettings
from cxkit.http.deps import get_settings

SettingsDep = Annotated[CEMSettings, Depends(get_settings)]
