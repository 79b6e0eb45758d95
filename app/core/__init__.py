"""The pure domain: event records, codecs and schemas, validation, the state machine,
settings, errors, ids, time helpers, topic names, auth tokens and the rules behind alerts and
anomalies. Nothing here imports the Faust app (``app.worker.main``)."""
