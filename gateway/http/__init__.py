"""The HTTP surface (DESIGN 5.1): aiohttp handlers that only translate, never decide."""
