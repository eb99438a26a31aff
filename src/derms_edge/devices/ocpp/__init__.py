"""OCPP charging stations (2.0.1 and 1.6J), the pure part: charging profiles from the
gateway's limits (profiles), station reports into readings (meter), and what a station
says about itself into a Capability (capability). No I/O: the CSMS session sends what
these build and hands back what the station answers."""
