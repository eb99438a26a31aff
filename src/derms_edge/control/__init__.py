"""The control core: events, arbitration, curves, state-of-charge limits and setpoints.

Nothing in this package touches a socket: given the events, the device states and the
time, it decides the setpoints and the responses (see ARCHITECTURE: functional core).
"""
