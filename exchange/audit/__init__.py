"""exchange.audit."""
