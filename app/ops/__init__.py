"""Operations: the ``cosmic`` command line, the local stack and schema registry, DLQ
inspection and redrive, table rebuild, replay, the demo workload and worker processes."""
