"""JAX: the model source, params I/O and pytree helpers, the jax2tf conversion, the host buffers
variables adopt, and the serialization-version guard."""
