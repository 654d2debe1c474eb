"""The client address behind proxies (api/forwarded.py): any header text gives an address, never an exception."""

from __future__ import annotations

import ipaddress

from hypothesis import example, given
from hypothesis import strategies as st

from relate.api.forwarded import client_address, parse_networks

TRUSTED = parse_networks(["127.0.0.1", "10.0.0.0/8"])
HEADER_TEXT = st.text(alphabet=st.sampled_from(list(' ,;="\\[]:_.for=unknown10.0.0.1198.51.100.7abcdef')), max_size=300)
LINES = st.lists(HEADER_TEXT | st.text(max_size=100), max_size=5)


@given(
    lines=LINES,
    header=st.sampled_from(["x-forwarded-for", "forwarded"]),
    peer=st.sampled_from(["127.0.0.1", "192.0.2.9"]),
)
@example(lines=['for="' + "\\" * 5000 + '"' * 3], header="forwarded", peer="127.0.0.1")
@example(lines=["10.0.0.1," * 5000], header="x-forwarded-for", peer="127.0.0.1")
def test_any_header_gives_an_address(lines: list[str], header: str, peer: str) -> None:
    """The answer is always an IP address: the peer's when it is not trusted, else one the header or peer names."""
    answer = client_address(peer, lines, header=header, trusted=TRUSTED)
    ipaddress.ip_address(answer)
    if peer == "192.0.2.9":
        assert answer == peer


@given(client=st.ip_addresses(), forged=st.lists(HEADER_TEXT, max_size=3))
def test_what_a_client_writes_never_replaces_what_the_proxy_appends(client: object, forged: list[str]) -> None:
    """Whatever a client puts in the header, the address the trusted proxy appends is the answer (if untrusted)."""
    address = ipaddress.ip_address(str(client))
    if any(address in net for net in TRUSTED):
        return
    node = f'"[{address}]:1234"' if address.version == 6 else str(address)
    xff = client_address("127.0.0.1", [*forged, str(address)], header="x-forwarded-for", trusted=TRUSTED)
    fwd = client_address("127.0.0.1", [", ".join([*forged, f"for={node}"])], header="forwarded", trusted=TRUSTED)
    expected = str(getattr(address, "ipv4_mapped", None) or address)
    assert xff == expected
    assert fwd == expected
