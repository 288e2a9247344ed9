"""The HTTP contract both services keep: problem+json, pagination, auth, idempotency, ETags."""
