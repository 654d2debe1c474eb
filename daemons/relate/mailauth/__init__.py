"""Inbound mail authentication: SPF (RFC 7208), DKIM (RFC 6376), ARC (RFC 8617), DMARC (RFC 7489),
Authentication-Results (RFC 8601).

:func:`relate.mailauth.verdict.judge` is the one entry point the SMTP
daemon calls at the end of DATA; the modules beside it each own one RFC.
Every DNS query goes through the daemon's asyncio resolver
(:mod:`relate.mailauth.dns`), whose cache the whole process shares.
"""
