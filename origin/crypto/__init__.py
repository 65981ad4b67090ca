"""Ciphers and key value types. Pure: bytes in, bytes out; no I/O, no asyncio."""
