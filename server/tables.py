"""Every table of the service, imported in one place so Alembic sees the whole schema."""

from server.achievements import tables as achievement_tables
from server.cloud_saves import tables as cloud_save_tables
from server.core import replay as replay_tables
from server.core.db import Base
from server.core.events import tables as event_tables
from server.downloads import content_tables, session_tables, settings_tables
from server.game_settings import tables as game_settings_tables
from server.library import family_tables
from server.library import tables as library_tables
from server.playtime import tables as playtime_tables

__all__ = [
    "Base",
    "achievement_tables",
    "cloud_save_tables",
    "content_tables",
    "event_tables",
    "family_tables",
    "game_settings_tables",
    "library_tables",
    "playtime_tables",
    "replay_tables",
    "session_tables",
    "settings_tables",
]
