"""Simulated OPC UA devices: one asyncua server per device (hil.opcua.server), their physics
and address-space contract (hil.opcua.devices) and the test PKI (hil.opcua.pki).

Importing this package, .devices or .pki does not import asyncua; only .server does.
"""
