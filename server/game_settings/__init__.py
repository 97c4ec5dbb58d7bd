"""Game settings: one JSON settings document per (user, product), synced across devices with etags."""
