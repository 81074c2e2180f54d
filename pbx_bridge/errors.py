"""The one exception tree of pbx-bridge.

    PbxBridgeError
    ├── ConfigError          a config file or environment value is invalid (names the key)
    ├── CaptureError         a capture file is missing or is not an AMI byte stream
    ├── AmiError             talking to Asterisk failed
    │   ├── AmiLoginError    Asterisk rejected the credentials
    │   └── AmiTimeout       an action got no response in time
    └── StoreError           the call store could not be opened or written

Third-party exceptions are wrapped at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class PbxBridgeError(Exception):
    """Base of every error pbx-bridge raises on purpose."""


class ConfigError(PbxBridgeError):
    """A configuration value is invalid; the message names the key and the reason."""


class CaptureError(PbxBridgeError):
    """A capture file is missing, unreadable or not an AMI byte stream."""


class AmiError(PbxBridgeError):
    """Talking to the Asterisk Manager Interface failed."""


class AmiLoginError(AmiError):
    """Asterisk rejected the AMI username or secret."""


class AmiTimeout(AmiError):
    """An AMI action got no response within its deadline."""


class StoreError(PbxBridgeError):
    """The call store could not be opened or written."""
