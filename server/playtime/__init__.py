"""PlaytimeTrackerService: play sessions (start / heartbeat / end), offline sessions, stats."""
