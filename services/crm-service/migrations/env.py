from crm.config import CRMSettings
from crm.models import Base
from cxkit.migrations import run_env

run_env(Base.metadata, CRMSettings().database_url)
