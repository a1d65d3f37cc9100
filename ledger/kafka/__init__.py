"""Kafka plumbing: clients, topics, offsets, the embedded broker."""
