from tests.integration.api.conftest import receiver

__all__ = ["receiver"]
