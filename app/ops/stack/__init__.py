"""The local stack: a real Kafka broker (KRaft), RabbitMQ and the schema registry, run natively.

``cosmic stack up | down | status`` drives :class:`app.ops.stack.manager.StackManager`.
"""
