"""OCPP charging stations (2.0.1 and 1.6J), with the gateway as their CSMS.

The pure part: charging profiles from the gateway's limits (profiles), station reports
into readings (meter), and what a station says about itself into a Capability
(capability). The I/O part: the websocket server that accepts the stations (csms), one
session per station (session) and the answers to what stations send (answers). The session
sends what the pure part builds and hands back what the station answers. The gateway's
part: one shared CSMS for the configured stations (hub) and one device driver per EVSE
(driver), built from the configuration's ``ocpp`` section and ``protocol: ocpp`` devices."""
