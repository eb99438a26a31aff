"""The gateway's YAML configuration as pydantic models, and loading it with readable errors.

`load_config` reads a file; every problem comes back as one line naming where it is
(``devices[1].port``) and what would be right. The sections live in their own modules:
`sections` (gateway, broker, control, telemetry), `device` (what every device has),
`modbus` (SunSpec and register-profile devices), `opcua` (OPC UA devices and node ids),
`ocpp` (the CSMS and the OCPP charging stations).
"""

from derms_edge.config.device import DeviceSection, StorageSettings
from derms_edge.config.file import AnyDevice, Config, Device, load_config, parse_config
from derms_edge.config.modbus import (
    MAX_SUNSPEC_BASE,
    SUNSPEC_BASES,
    EvseProfile,
    MeasuredName,
    ModbusDevice,
    ProfileDevice,
    RegisterPoint,
    RegisterType,
    SerialSection,
    SunSpecDevice,
)
from derms_edge.config.nodeid import NodeRef, parse_node_id
from derms_edge.config.ocpp import OcppDevice, OcppSection, OcppTls
from derms_edge.config.opcua import (
    POINT_UNITS,
    SI_UNITS,
    NodePoint,
    OpcUaDevice,
    OpcUaPointName,
    OpcUaSecurity,
)
from derms_edge.config.sections import (
    ControlSection,
    ExportLimitSection,
    GatewaySection,
    HomeAssistantSection,
    InfluxSection,
    MqttSection,
    MqttTls,
    RoleSection,
    TelemetrySection,
    discovery_name,
)

__all__ = [
    "MAX_SUNSPEC_BASE",
    "POINT_UNITS",
    "SI_UNITS",
    "SUNSPEC_BASES",
    "AnyDevice",
    "Config",
    "ControlSection",
    "Device",
    "DeviceSection",
    "EvseProfile",
    "ExportLimitSection",
    "GatewaySection",
    "HomeAssistantSection",
    "InfluxSection",
    "MeasuredName",
    "ModbusDevice",
    "MqttSection",
    "MqttTls",
    "NodePoint",
    "NodeRef",
    "OcppDevice",
    "OcppSection",
    "OcppTls",
    "OpcUaDevice",
    "OpcUaPointName",
    "OpcUaSecurity",
    "ProfileDevice",
    "RegisterPoint",
    "RegisterType",
    "RoleSection",
    "SerialSection",
    "StorageSettings",
    "SunSpecDevice",
    "TelemetrySection",
    "discovery_name",
    "load_config",
    "parse_config",
    "parse_node_id",
]
