"""exchange.cli."""
