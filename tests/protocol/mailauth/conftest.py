"""A loopback DNS server and the resolver the SMTP daemon's checks would use on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import dns.message
import dns.rdatatype
import pytest

from relate.config import DeliveryConfig
from relate.mailauth.dns import Dns
from relate.runtime.resolver import make_resolver
from relate.testing.dns import DnsServer, Zone


@dataclass
class Net:
    zone: Zone
    dns: Dns
    queries: list[tuple[str, str]]

    def txt(self, name: str, *values: str) -> None:
        """Publish TXT records (each value one string, quoted here)."""
        for value in values:
            self.zone.add(name, "TXT", '"' + value.replace('"', '\\"') + '"')


class _CountingZone(Zone):
    """A zone that records every question it is asked."""

    asked: list[tuple[str, str]]

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        question = query.question[0]
        self.asked.append((question.name.to_text(omit_final_dot=True).lower(), dns.rdatatype.to_text(question.rdtype)))
        return super().answer(query)


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    """An empty zone on loopback (every name NXDOMAIN until added) and a resolver with its own cache."""
    zone = _CountingZone()
    zone.asked = []
    server = DnsServer(zone)
    address = await server.start()
    resolver = make_resolver(DeliveryConfig(dns_servers=[address], dns_timeout=2.0))
    yield Net(zone, Dns(resolver), zone.asked)
    server.close()
