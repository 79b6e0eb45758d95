"""Cosmic Horizons event-streaming service (Faust on Kafka, RabbitMQ, schema registry)."""
