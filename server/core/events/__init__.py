"""Transactional outbox (SPEC §7, §8): CloudEvents for Kafka and notifications for the per-user Redis stream
are written with the change they describe and relayed after commit by `relay.OutboxRelay`."""
