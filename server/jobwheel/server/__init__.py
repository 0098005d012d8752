"""The jobwheel server."""
