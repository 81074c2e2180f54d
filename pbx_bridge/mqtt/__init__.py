"""MQTT output: calls, records, violations and the live floor (topic tree in :mod:`.publisher`)."""

from pbx_bridge.mqtt.publisher import LiveView, MqttPublisher, MqttService, Outbox, tls_context

__all__ = ["LiveView", "MqttPublisher", "MqttService", "Outbox", "tls_context"]
