"""A stand-in for Asterisk's AMI: a TCP server, capture replay and a synthetic call-centre day.

``server``    AmiEmulator, an asyncio TCP server that speaks AMI like Asterisk 22.
``pbx_state`` what the emulated PBX knows (channels, queues), folded from emitted events; pure.
``replay``    read a capture, give it fresh ids and timestamps, play it through the server.
``events``    builders for AMI events with the exact header sets Asterisk 22 sends; pure.
``generator`` a deterministic synthetic call-centre day plus its ground truth; pure.
"""

from pbx_bridge.emulator.generator import CallMix, DayConfig, DayGenerator, generate_day, write_capture
from pbx_bridge.emulator.replay import Capture, parse_capture, play, read_capture, refresh_ids, retime
from pbx_bridge.emulator.server import AmiEmulator

__all__ = [
    "AmiEmulator",
    "CallMix",
    "Capture",
    "DayConfig",
    "DayGenerator",
    "generate_day",
    "parse_capture",
    "play",
    "read_capture",
    "refresh_ids",
    "retime",
    "write_capture",
]
