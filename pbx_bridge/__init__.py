"""pbx-bridge: rebuilds every Asterisk call from AMI events and measures it against the service standard."""

__version__ = "0.1.0"
