"""Every table of the service, imported in one place so Alembic sees the whole schema."""

from server.core.db import Base
from server.core.events import tables as event_tables
from server.library import tables as library_tables

__all__ = ["Base", "event_tables", "library_tables"]
