"""The project's own exceptions; library errors are wrapped into these."""

from __future__ import annotations


class CosmicError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(CosmicError):
    """A COSMIC_* setting is missing or malformed."""


class StackError(CosmicError):
    """The local stack (Kafka, RabbitMQ, registry) could not be started, stopped or checked."""


class MissingToolError(StackError):
    """A program the local stack needs (java, mvn, apt-get, rabbitmq-server) is not installed."""


class PortInUseError(StackError):
    """A port the stack wants is held by a process that is not ours."""


class RegistryError(CosmicError):
    """The schema registry's storage (its Kafka topic) failed or timed out."""
