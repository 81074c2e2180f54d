"""The call engine: pure and synchronous. Typed AMI events in, typed outputs and call records out.

Nothing here imports asyncio, panoramisk, aiosqlite, MQTT or web code, so the engine runs the
same live, in a replay and in a unit test.
"""
