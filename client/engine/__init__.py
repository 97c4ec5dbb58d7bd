"""The launcher's download engine: turns a download session's manifest into verified files on disk.

Pure parts (unit-tested): `throttle` (token bucket with an injectable clock, adjustable concurrency gate),
`journal` (the crash-safe record of verified chunks), `plan` (which chunks to fetch, which to copy from
installed files, which files to write and remove), `record` (what is installed where). The I/O parts:
`fetch` (chunk GETs with the bandwidth cap, retries and link refresh), `local` (hashing installed files),
`engine` (install / update / verify / repair / uninstall over the SDK in client/sdk/downloads.py).
"""
