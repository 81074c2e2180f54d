"""Everything that knows the AMI wire format: framing, typed events, capture files, the live connection."""
