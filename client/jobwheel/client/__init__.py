"""The jobwheel Python client."""
