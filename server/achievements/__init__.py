"""AchievementService: achievement definitions, monotonic progress, permanent unlocks, status listing."""
