"""Media containers (ISO-BMFF, MPEG-TS). Pure: bytes in, bytes out; no I/O, no asyncio."""
