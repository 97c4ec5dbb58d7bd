"""DownloadService: the chunk store and published content, download sessions and queue, settings."""
