"""The small shared core every capability stands on: config, db, redis, s3, auth, errors, events."""
