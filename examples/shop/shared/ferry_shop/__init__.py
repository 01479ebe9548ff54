"""What the shop's three services share: how they read their settings, build an outbox
envelope, and read a CloudEvent that Ferry's worker delivers. No Kafka client anywhere: the
services write outbox rows and answer HTTP; Ferry moves the events."""
