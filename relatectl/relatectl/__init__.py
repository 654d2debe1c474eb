"""relatectl: set up and run Relate Mail."""
