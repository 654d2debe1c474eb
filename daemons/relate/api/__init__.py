"""The API daemon: REST + WebSocket for web, desktop and mobile apps."""
