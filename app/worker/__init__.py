"""The worker runtime: the Faust app (``main``), the agents' stream plumbing, health, the
RabbitMQ bridge and consumers, the websocket hub, outbound deliveries and everything that
reaches into Faust (``faust_internals``)."""
