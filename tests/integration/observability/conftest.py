from tests.integration.api.conftest import receiver
from tests.integration.storage.conftest import store, store_url

__all__ = ["receiver", "store", "store_url"]
