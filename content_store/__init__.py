"""The content-addressed chunk store's format, shared by the service (server/downloads) and the reference
client (client/: `publish` and the launcher's download engine), so both cut, name, hash and compress
alike and a player's launcher needs nothing of the server: `chunking` (FastCDC parameters, chunk ids,
zstd, object keys, path and file-list rules; pure) and `builds` (a local directory prepared for
publishing in parallel threads)."""
