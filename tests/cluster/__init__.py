"""Several ``relay serve`` processes on one PostgreSQL store: accounts spread, handover, fencing."""
