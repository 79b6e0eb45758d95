"""Helpers shared by the unit, integration and reliability suites (``tests/`` is on ``sys.path``
through its rootdir conftest, so these import as ``support.<module>``).

* :mod:`support.polling`: ``wait_until`` / ``wait_until_async``, the one bounded poll.
* :mod:`support.workers`: the isolated worker environment, and waiting for a workload's final states.
* :mod:`support.ws`: websocket clients, tokens and events to publish.
* :mod:`support.audit`: waiting for the audit hash chain.
* :mod:`support.rabbit`: a uuid RabbitMQ vhost per test (the ``vhost`` fixture).
* :mod:`support.topic_cleanup`: deleting a test's Kafka topics.
* :mod:`support.event_examples`: one JSON example per event type, an in-memory registry client.
"""
