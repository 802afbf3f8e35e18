"""Click commands, one module per area, each with ``register(group)``; see :mod:`kdumplab.cli`."""
