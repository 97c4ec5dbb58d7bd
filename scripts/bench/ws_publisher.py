"""`python -m scripts.bench.ws_publisher`: the WebSocket bench's publisher, a process of its own.

XADDs --rate notifications per second for --seconds, each to the stream of a random user of --users (a
file of user ids, one a line; or --user for one), as the outbox relay does (`type`, `payload` JSON). Each
payload carries `t`, time.time() just before its XADD is written: the swarm (scripts/ws_swarm.py) takes its
receive time minus `t` on the same clock. One connection; notifications that fall due together (a late
wake-up) go out in one pipeline, each stamped when it is sent, so a late publisher delays its own entries
but never makes the relay look slower. Prints one JSON line: sent, seconds, achieved rate, largest batch.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from redis import Redis

from server.core.config import Settings
from server.core.uow import notification_stream


def publish(redis: Redis, users: list[str], rate: int, seconds: float) -> dict:
    total = int(rate * seconds)
    sent = largest = 0
    start = time.monotonic()
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        if due <= sent:
            time.sleep(max(0.0, sent / rate - (time.monotonic() - start)))
            continue
        with redis.pipeline(transaction=False) as pipe:
            for _ in range(due - sent):
                payload = json.dumps({"t": time.time()})
                stream = notification_stream(random.choice(users))
                pipe.xadd(stream, {"type": "achievementUnlocked", "payload": payload})
            pipe.execute()
        largest = max(largest, due - sent)
        sent = due
    elapsed = time.monotonic() - start
    return {
        "sent": sent,
        "seconds": round(elapsed, 3),
        "rate": round(sent / elapsed, 1),
        "largest_batch": largest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", help="file of user ids, one a line")
    who.add_argument("--user", help="one user id")
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if args.users:
        with open(args.users) as f:
            users = [line.strip() for line in f if line.strip()]
    else:
        users = [args.user]
    redis = Redis.from_url(Settings.from_env().redis_url)
    try:
        print(json.dumps(publish(redis, users, args.rate, args.seconds)), flush=True)
    finally:
        redis.close()


if __name__ == "__main__":
    main()
