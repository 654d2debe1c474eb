"""A tiny authoritative DNS server on loopback, for tests and benchmarks of mail delivery.

It answers UDP queries from a table of records (``zone.add("example.test",
"MX", "10 mx1.example.test.")``) and says NXDOMAIN for names it has never
heard of, or NOERROR with no answer for a known name without that type.
Names in ``zone.fail`` get SERVFAIL. With ``negative_ttl`` set, a negative
answer carries an SOA (for the name's last two labels) whose MINIMUM is that
many seconds, as a real server's does, so resolvers keep it (RFC 2308); by
default it carries none and nothing negative is kept, so a test may add a
record a moment after a lookup missed it. Nothing here is for production.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import typing
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


@dataclass
class Zone:
    records: dict[tuple[str, str], list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    fail: set[str] = field(default_factory=set)
    negative_ttl: int = 0

    def add(self, name: str, rdtype: str, value: str) -> None:
        self.records[(name.lower().rstrip("."), rdtype.upper())].append(value)

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        if name in self.fail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        values = self.records.get((name, rdtype))
        if values:
            response.answer.append(
                dns.rrset.from_text_list(question.name, 60, dns.rdataclass.IN, question.rdtype, values)
            )
        else:
            if not any(key[0] == name for key in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
            if self.negative_ttl > 0:
                apex = dns.name.from_text(".".join(name.split(".")[-2:]) + ".")
                soa = f"ns.{apex} hostmaster.{apex} 1 3600 600 86400 {self.negative_ttl}"
                response.authority.append(
                    dns.rrset.from_text_list(apex, self.negative_ttl, dns.rdataclass.IN, dns.rdatatype.SOA, [soa])
                )
        return response


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        assert self.transport is not None
        self.transport.sendto(self.zone.answer(query).to_wire(), addr)


class DnsServer:
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self._transport: asyncio.DatagramTransport | None = None
        self.address = ("127.0.0.1", 0)

    async def start(self, host: str = "127.0.0.1") -> str:
        """Listen on an ephemeral UDP port; returns ``host:port`` for ``delivery.dns_servers``."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self.zone), local_addr=(host, 0))
        self._transport = transport
        self.address = transport.get_extra_info("sockname")[:2]
        return f"{self.address[0]}:{self.address[1]}"

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class ThreadedDnsServer:
    """A :class:`DnsServer` on an event loop of its own in a daemon thread, for synchronous code (benchmarks,
    tests that start the daemons as processes): ``start()`` returns ``host:port``; the zone may be changed
    while it runs."""

    def __init__(self, zone: Zone | None = None) -> None:
        self.zone = zone if zone is not None else Zone()
        self.address = ""
        self._loop = asyncio.new_event_loop()
        self._server = DnsServer(self.zone)
        self._thread = threading.Thread(target=self._loop.run_forever, name="relate-test-dns", daemon=True)

    def start(self) -> str:
        self._thread.start()
        self.address = asyncio.run_coroutine_threadsafe(self._server.start(), self._loop).result(10)
        return self.address

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._server.close)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive() and not self._loop.is_closed():
            # The transport's socket is closed by a callback that the loop stopped before running; run it,
            # then close the loop (its self-pipe too): nothing is left to the garbage collector.
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()
