"""The HTTP edge: metrics, health, the live wallboard and the QA API (aiohttp)."""
