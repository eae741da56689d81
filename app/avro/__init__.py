"""Avro: the schemas/ catalog, the Confluent wire-format codec, compatibility checks."""
