"""The one address of the RabbitMQ management server: the dashboard's link, GET /api/queues' management_url and
the management client's API calls all come from shared.rabbitmq_management.management_ui_url."""

from __future__ import annotations

import pytest

from shared.rabbitmq_management import Management, management_ui_url
from shared.settings import Settings


@pytest.mark.parametrize(("configured", "shown"), [
    ("http://guest:guest@127.0.0.1:15672/", "http://127.0.0.1:15672/"),
    ("http://guest:guest@rabbitmq", "http://rabbitmq:15672/"),
    # IPv6: the brackets stay, or the port would read as part of the address.
    ("http://guest:guest@[::1]:15672/", "http://[::1]:15672/"),
    ("http://admin:s%40cret@[2001:db8::7]/", "http://[2001:db8::7]:15672/"),
    # A management plugin behind a path prefix (or a proxy) keeps its path; query and fragment are dropped.
    ("https://ops:pw@rabbit.example.com:443/rabbitmq", "https://rabbit.example.com:443/rabbitmq/"),
    ("http://guest:guest@[::1]:15673/mq/admin/?x=1#top", "http://[::1]:15673/mq/admin/"),
])
def test_the_management_address_has_no_credentials_and_keeps_ipv6_brackets_and_path(configured: str,
                                                                                     shown: str) -> None:
    assert management_ui_url(configured) == shown


def test_the_client_calls_the_api_under_the_address_it_links_to() -> None:
    settings = Settings(_env_file=None, rabbitmq_management_url="http://ops:pw@[::1]:15672/rabbitmq/",  # type: ignore[call-arg]
                        amqp_url="amqp://guest:guest@127.0.0.1:5672/%2Ftests")
    management = Management(settings)
    assert management.ui_url == "http://[::1]:15672/rabbitmq/"
    assert management.base == "http://[::1]:15672/rabbitmq"  # requests go to {base}/api/...
    assert management.vhost == "/tests"
    assert "ops" not in management.ui_url and "pw" not in management.ui_url
