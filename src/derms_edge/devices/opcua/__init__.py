"""OPC UA devices over asyncua. Importing this package does not import asyncua: only
`derms_edge.devices.opcua.driver` and `.browse` do, when a device or command needs them."""
