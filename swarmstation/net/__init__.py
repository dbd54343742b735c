"""Outbound HTTP to URLs that came from outside: scheme, host and address checks on every hop,
and credentials only for the service they belong to (see :mod:`swarmstation.net.outbound`)."""
