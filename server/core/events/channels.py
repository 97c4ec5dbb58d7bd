"""The outbox's channels and partitions, apart from the tables so the relay needs no ORM to know them."""

CHANNEL_KAFKA = "kafka"
CHANNEL_NOTIFICATION = "notification"
CHANNELS = (CHANNEL_KAFKA, CHANNEL_NOTIFICATION)

# Rows are partitioned by a hash of their key (the user id); one relay at a time owns a partition, so one
# user's rows are relayed in order. The count is part of the schema (the generated column `partition` of
# the outbox, migration 0018), not a setting: processes that disagreed on it would relay one user's rows
# from two partitions.
OUTBOX_PARTITIONS = 32
