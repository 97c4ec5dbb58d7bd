# LOCAL SHIM, NOT COMMITTED: stands in for the settings engineer's module until it lands.
from dataclasses import dataclass, field


@dataclass
class DownloadSettings:
    max_concurrent_downloads: int = 3
    branches: dict = field(default_factory=dict)

    def branch_for(self, product_id):
        return self.branches.get(str(product_id), "public")


async def get_download_settings(session, user_id):
    return DownloadSettings()


def in_schedule_window(settings, now):
    return True
