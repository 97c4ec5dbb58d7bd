"""The WebSocket notification relay (SPEC §8); `python -m gateway` runs it. See gateway/app.py."""
