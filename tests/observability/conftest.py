from tests.api.conftest import receiver

__all__ = ["receiver"]
