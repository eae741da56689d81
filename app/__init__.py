"""Kafka-native failure-recovery service."""

__version__ = "0.1.0"
