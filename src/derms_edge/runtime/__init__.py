"""The imperative shell: the wiring, the control loop, the schedule store, the supervisor and
the watchdog. Everything here runs in asyncio; the decisions are the control core's."""
