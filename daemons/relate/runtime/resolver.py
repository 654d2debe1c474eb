"""The daemons' DNS resolver: dnspython's asyncio resolver with its own answer cache.

``delivery.dns_servers`` names the servers (empty: the system's, from
/etc/resolv.conf) and ``delivery.dns_timeout`` bounds each lookup; the
delivery daemon's MX lookups and the SMTP daemon's SPF, DKIM and DMARC
checks use the same settings. One resolver per process: its cache
(answers kept for their TTL) is shared by everything in that process.
"""

from __future__ import annotations

import dns.asyncresolver
import dns.nameserver
import dns.resolver

from relate.config import DeliveryConfig, parse_listen


def make_resolver(cfg: DeliveryConfig) -> dns.asyncresolver.Resolver:
    if not cfg.dns_servers:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        servers: list[str | dns.nameserver.Nameserver] = []
        for item in cfg.dns_servers:
            # "192.0.2.1", "2001:db8::1", or with a port: "192.0.2.1:53", "[2001:db8::1]:53".
            if item.startswith("[") or item.count(":") == 1:
                host, port = parse_listen(item)
                servers.append(dns.nameserver.Do53Nameserver(host, port))
            else:
                servers.append(item)
        resolver.nameservers = servers
    resolver.cache = dns.resolver.LRUCache()  # answers are kept for their TTL
    resolver.lifetime = cfg.dns_timeout
    resolver.timeout = cfg.dns_timeout
    return resolver
