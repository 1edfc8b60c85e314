"""Routing state shared by every gateway process that names the same Redis (``GATEWAY_STATE_URL``).

Shared: cooldowns, circuit breakers (with one probe across replicas), in-flight leases of ``max_concurrency``
backends, conversation affinity. Kept per process: the wait queue, metrics, health-check results.
``store`` is the one seam to Redis (each call one atomic Lua script from ``scripts``), ``connection`` builds the
client (password or Entra token), ``shared`` keeps the local view and fails open.
"""
