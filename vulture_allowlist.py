"""Names vulture cannot see used, each with who uses it (run by scripts/test).

vulture reads our code only: a name that a library calls or reads, or that reaches people
through serialisation, looks dead to it. Everything else it finds is dead and goes.
"""

# ruff: noqa
_ = object()

# paho-mqtt calls a client's callbacks, which are attributes of the client
_.on_connect
_.on_connect_fail
_.on_disconnect
_.on_publish
_.on_socket_register_write
_.on_socket_unregister_write
_.on_socket_close
_.on_subscribe
_.connect_timeout  # read by connect()

# asyncua calls a subscription handler's methods, with these arguments
_.datachange_notification
_.status_change_notification
val
# ... reads these request and server attributes
_.NodesToBrowse
_.RequestedMaxReferencesPerNode
_.session_timeout
_.product_uri
_.manufacturer_name
_.CurrentTime
_.DiscoveryUrls
_.attribute_service
_.max_subscriptions
_.get_user  # the rig's user manager, asked by the server at each session
_.connection_lost_callback  # the client calls it when its connection drops

# pymodbus reads a server's datastore context
_.context

# http.server calls a handler's do_POST and log_message
_.do_POST
_.log_message

# yaml calls Dumper.ignore_aliases
_.ignore_aliases

# pydantic reads model_config; pytest reads pytestmark
model_config
pytestmark

# an async context manager's __aexit__ takes these whether it needs them or not
exc_type
tb

# fields that reach people through serialisation (dataclasses.fields, pydantic)
device_quality  # StatusMessage, on the status topic
var_max_abs  # Capability, on the capability topic

# the ocpp library routes OCPP requests to the @on(Action...) handlers of a ChargePoint
# (hil/ocpp/v201.py, hil/ocpp/v16.py)
_.on_set_charging_profile
_.on_clear_charging_profile
_.on_get_composite_schedule
_.on_get_variables
_.on_get_configuration
