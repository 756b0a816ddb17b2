"""The worker: consumes the signup events and keeps their projections.

``quartstack worker`` runs :class:`~quartstack.worker.consumer.ProjectionConsumer`
in a process of its own (:mod:`quartstack.worker.app`), which serves only
``/health/*`` and ``/metrics`` on ``WORKER_PORT``. Projections: the users read
model in MongoDB (:mod:`~quartstack.worker.read_model`) and the signup counters in
Redis (:mod:`~quartstack.worker.counters`). The API's query routes read them.
"""
