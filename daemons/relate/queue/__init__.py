"""The delivery daemon: works the outbound queue."""
