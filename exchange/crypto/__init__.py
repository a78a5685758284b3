"""exchange.crypto."""
