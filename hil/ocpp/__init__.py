"""The OCPP charging-station simulator: profiles and station state (pure) and the websocket
client on the `ocpp` library's charge-point side (hil.ocpp.client, hil.ocpp.v201, hil.ocpp.v16).
"""
