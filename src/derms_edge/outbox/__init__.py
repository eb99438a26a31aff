"""The outbox: the only way out for what the gateway says that must not be lost.

Telemetry and control responses are stored (`buffer.Outbox`, SQLite) before anything is
sent; the forwarder (`forward.Forwarder`) sends them to the MQTT broker and marks each done
on its PUBACK; the InfluxDB sink (`influx.InfluxSink`) writes the telemetry to a history
database from the same rows. A broker or a database away loses nothing while the buffer
lasts.
"""
