"""exchange.storage."""
