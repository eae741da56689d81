"""Replaying dead letters: which records (selection), where to (targets), how far a named
replay has got (progress, kept in a compacted Kafka topic), and the loop that reads the
dead-letter topic and sends (engine). The dead-letter topic is only ever read."""
