"""exchange.transport."""
