from cem.config import CEMSettings
from cem.models import Base
from cxkit.migrations import run_env

run_env(Base.metadata, CEMSettings().database_url)
