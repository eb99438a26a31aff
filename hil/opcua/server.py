"""One asyncua server serving one OPC UA device, restartable on the same port.

Endpoint opc.tcp://<host>:<port>/derms-edge/hil/<id>, with a None and a Basic256Sha256
SignAndEncrypt endpoint. The device's object Objects/<id> and its variables
`s=<id>.<Name>` live in the device's namespace (index 2, or higher after restarts that
shift the namespaces).

Client writes are vetted per variable before asyncua stores them: read-only variables answer
BadNotWritable, a value of another built-in type BadTypeMismatch, a value the device refuses
its status (BadOutOfRange). The simulation publishes straight into the address space, past
that vetting, with fresh source timestamps every period.

asyncua builds its standard address space (about 45 MB of Python objects) in about 1 s per
server. Every server here instead loads it lazily from one shelf (asyncua's own start-up
cache for small devices), built once per machine and asyncua version under the temp
directory: a server then starts in about 0.05 s and costs a few MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import os
import shelve
import shutil
import sys
import tempfile
from collections.abc import Mapping
from copy import copy
from datetime import UTC
from pathlib import Path
from typing import Any

import asyncua
from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.address_space import AddressSpace, AttributeService
from asyncua.server.internal_server import InternalServer
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from hil.opcua.devices import OpcUaDevice, Variable
from hil.opcua.pki import OpcUaPki, server_application_uri
from hil.processes import free_port

PUBLISH_S = 0.1
"""How often every variable is republished with a fresh SourceTimestamp, wall s."""
SHIFT_NAMESPACE = "urn:derms-edge:hil:shift:{}"
"""Dummy namespaces registered before the device's to move its index."""

_ADMIN = User(role=UserRole.Admin)
_log = logging.getLogger(__name__)


def endpoint_url(host: str, port: int, device_id: str) -> str:
    """The endpoint URL of a device's server."""
    netloc = f"[{host}]" if ":" in host else host
    return f"opc.tcp://{netloc}:{port}/derms-edge/hil/{device_id}"


class _Users(UserManager):
    """Sessions as plain users (never Admin); with `users`, only those names and passwords."""

    def __init__(self, users: Mapping[str, str] | None) -> None:
        self.users = users

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if self.users is None:
            return User(role=UserRole.User, name=username)
        expected = self.users.get(username or "")
        if expected is None or password is None:
            return None
        if not hmac.compare_digest(expected.encode(), password.encode()):
            return None
        return User(role=UserRole.User, name=username)


class _VettedWrites(AttributeService):
    """asyncua's Write service with the device's checks in front, one item at a time."""

    def __init__(self, aspace: AddressSpace, server: OpcUaServer) -> None:
        super().__init__(aspace)
        self._server = server

    async def write(self, params: ua.WriteParameters, user: User = _ADMIN) -> list[ua.StatusCode]:
        results = []
        for item in params.NodesToWrite:
            refused = self._server.vet(item)
            if refused is not None:
                results.append(refused)
                continue
            [status] = await super().write(ua.WriteParameters(NodesToWrite=[item]), user)
            if status.is_good():
                self._server.accepted(item)
            results.append(status)
        return results


class OpcUaServer:
    """Serves `device` on host:port (0: a free port, bound at the first start and kept)."""

    def __init__(
        self,
        device: OpcUaDevice,
        host: str,
        port: int,
        *,
        users: Mapping[str, str] | None = None,
        publish_s: float | None = None,
    ) -> None:
        self.device = device
        self.host = host
        self.port = port
        self.users = users
        self.publish_s = publish_s or PUBLISH_S
        """How often the variables are republished, wall s (default PUBLISH_S)."""
        self.shifted_namespaces = 0
        """Dummy namespaces registered before the device's (its index is 2 plus these)."""
        self.pki: OpcUaPki | None = None
        self._server: Server | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._variables: dict[ua.NodeId, Variable] = {}
        self._types = {v.name: ua.VariantType[v.type] for v in device.variables}

    @property
    def endpoint(self) -> str:
        """opc.tcp://<host>:<port>/derms-edge/hil/<id> (port 0 until the first start, when it
        was 0)."""
        return endpoint_url(self.host, self.port, self.device.id)

    async def start(self, pki: OpcUaPki | None = None) -> None:
        """Build the address space and listen; `pki` is kept for later starts."""
        if self._server is not None:
            raise RuntimeError(f"{self.device.id}: the OPC UA server is already running")
        self.pki = pki or self.pki
        if self.pki is None:
            raise RuntimeError(f"{self.device.id}: the OPC UA server needs its PKI")
        if self.port == 0:  # drawn once, kept by later starts (free_port says why not 0)
            self.port = free_port()
        server = await self._build(self.pki)
        await server.start()
        self._server = server
        self._publisher = asyncio.create_task(
            self._run_publisher(), name=f"hil-opcua-{self.device.id}"
        )

    async def stop(self) -> None:
        """Stop publishing, close every connection and stop listening."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
        server, self._server = self._server, None
        if server is not None:
            await server.stop()
            # asyncua keeps a session with subscriptions alive after its connection drops, for
            # the client to take it over (Part 4, 6.7); a restarted device has forgotten it.
            for session in list(server.iserver._external_sessions.values()):
                await session.close_session()

    async def stall_subscriptions(self) -> int:
        """The server's subscription engine stops, as a stuck publishing thread would: no more
        notifications or keep-alives on the subscriptions it has, while its sessions go on
        answering reads and writes. How many stopped; a new subscription works again."""
        if self._server is None:
            return 0
        subscriptions = list(self._server.iserver.subscription_service.subscriptions.values())
        for subscription in subscriptions:
            await subscription.stop()
        return len(subscriptions)

    async def _build(self, pki: OpcUaPki) -> Server:
        device = self.device
        server = Server(user_manager=_Users(self.users))
        await server.init(await asyncio.to_thread(standard_address_space))
        server.disable_clock()  # its 1 s loop would delay stop(); _publish keeps CurrentTime
        server.set_server_name(f"derms-edge HIL {device.kind} {device.id}")
        server.product_uri = "urn:derms-edge:hil"
        server.manufacturer_name = "derms-edge"
        server.set_endpoint(self.endpoint)
        await server.set_application_uri(server_application_uri(device.id))
        server.allow_remote_admin(False)
        server.set_security_policy(
            [
                ua.SecurityPolicyType.NoSecurity,
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ]
        )
        if self.users is not None:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        await server.load_certificate(str(pki.server_certificate))
        await server.load_private_key(str(pki.server_private_key))
        trust = TrustStore([pki.trusted_dir], [])
        await trust.load()
        server.set_certificate_validator(
            CertificateValidator(
                CertificateValidatorOptions.TRUSTED_VALIDATION
                | CertificateValidatorOptions.PEER_CLIENT,
                trust,
            )
        )
        server.iserver.attribute_service = _VettedWrites(server.iserver.aspace, self)
        for i in range(self.shifted_namespaces):
            await server.register_namespace(SHIFT_NAMESPACE.format(i + 1))
        ns = await server.register_namespace(device.namespace_uri)
        folder = await server.nodes.objects.add_object(
            _string_id(device.id, ns), ua.QualifiedName(device.id, ns)
        )
        device.refresh()
        values = device.values()
        self._variables = {}
        for variable in device.variables:
            node_id = _string_id(f"{device.id}.{variable.name}", ns)
            value = ua.Variant(values[variable.name], self._types[variable.name])
            node = await folder.add_variable(node_id, ua.QualifiedName(variable.name, ns), value)
            if variable.writable:
                await node.set_writable()
            self._variables[node_id] = variable
        return server

    def vet(self, item: ua.WriteValue) -> ua.StatusCode | None:
        """The status refusing a client write to one of the device's variables, or None to let
        asyncua go on (access level, type) with it."""
        variable = self._variables.get(item.NodeId)
        if variable is None or item.AttributeId != AttributeIds.Value:
            return None
        if not variable.writable:
            return _status(StatusCodes.BadNotWritable)
        if item.IndexRange:
            return _status(StatusCodes.BadIndexRangeInvalid)
        dv = item.Value
        if dv.StatusCode is not None and not dv.StatusCode.is_good():
            return _status(StatusCodes.BadWriteNotSupported)  # a value, not a status
        if (
            dv.Value is None
            or dv.Value.VariantType != self._types[variable.name]
            or dv.Value.is_array
        ):
            return _status(StatusCodes.BadTypeMismatch)
        refusal = self.device.refusal(variable.name, dv.Value.Value)
        return None if refusal is None else _status(getattr(StatusCodes, refusal))

    def accepted(self, item: ua.WriteValue) -> None:
        """A client write asyncua stored: the device applies it."""
        variable = self._variables.get(item.NodeId)
        variant = item.Value.Value
        if variable is None or item.AttributeId != AttributeIds.Value or variant is None:
            return
        self.device.accept(variable.name, variable.type, variant.Value)

    async def _run_publisher(self) -> None:
        try:
            while True:
                await self._publish()
                await asyncio.sleep(self.publish_s)
        except Exception:
            _log.exception("%s: publishing stopped", self.device.id)
            raise

    async def _publish(self) -> None:
        """Step the device and write every variable (and the server's CurrentTime) with the
        time now, straight into the address space."""
        server = self._server
        if server is None:
            return
        aspace = server.iserver.aspace
        self.device.refresh()
        values = self.device.values()
        now = ua.DateTime.now(UTC)
        for node_id, variable in () if self.device.frozen else self._variables.items():
            value = ua.Variant(values[variable.name], self._types[variable.name])
            dv = ua.DataValue(value, SourceTimestamp=now, ServerTimestamp=now)
            status = await aspace.write_attribute_value(node_id, AttributeIds.Value, dv)
            status.check()
        status_node = ua.NodeId(ua.Int32(ObjectIds.Server_ServerStatus))
        server_status = copy(aspace.read_attribute_value(status_node, AttributeIds.Value))
        if server_status.Value is not None and server_status.Value.Value is not None:
            current = copy(server_status.Value.Value)
            current.CurrentTime = now
            await server.write_attribute_value(status_node, ua.DataValue(ua.Variant(current)))
        await server.write_attribute_value(
            ua.NodeId(ua.Int32(ObjectIds.Server_ServerStatus_CurrentTime)),
            ua.DataValue(ua.Variant(now, ua.VariantType.DateTime)),
        )


def standard_address_space() -> Path:
    """The shelf of asyncua's standard address space to pass to Server.init."""
    shelf = _shelf()
    if not shelf.exists():  # removed since it was checked (e.g. by a temp cleaner)
        _shelf.cache_clear()
        shelf = _shelf()
    return shelf


@functools.cache
def _shelf() -> Path:
    """The shelf, checked once per process (opening it takes about 45 ms), built if missing or
    unreadable (about 2 s), atomically so that concurrent rigs do not trip on each other."""
    version = f"{asyncua.__version__}-py{sys.version_info.major}.{sys.version_info.minor}"
    cache = Path(tempfile.gettempdir()) / f"derms-edge-hil-asyncua-{version}"
    shelf = cache / "standard"
    if _readable(shelf):
        return shelf
    _log.info("building the asyncua address-space shelf in %s", cache)
    damaged = cache.exists()
    from asyncua.server.standard_address_space.standard_address_space import (
        fill_address_space,
    )

    building = Path(tempfile.mkdtemp(prefix=f"{cache.name}.", dir=cache.parent))
    iserver = InternalServer()
    fill_address_space(iserver.node_mgt_service)  # type: ignore[no-untyped-call]
    iserver.aspace.make_aspace_shelf(building / shelf.name)
    # asyncua looks for the file itself; dbm.dumb writes only <name>.dat, .dir and .bak
    (building / shelf.name).touch()
    building.chmod(0o755)
    if damaged:
        shutil.rmtree(cache, ignore_errors=True)
    try:
        os.rename(building, cache)
    except OSError:  # another rig renamed its build first: use that one if it can
        if not _readable(shelf):
            return building / shelf.name
        shutil.rmtree(building, ignore_errors=True)
    return shelf


def _readable(shelf: Path) -> bool:
    """Whether a shelf opens and holds the standard address space's Root folder."""
    try:
        with shelve.open(str(shelf), "r") as db:
            return "i=84" in db
    except Exception:  # missing, or damaged (e.g. by a temp cleaner)
        return False


def _string_id(identifier: str, namespace: int) -> ua.NodeId:
    return ua.NodeId(ua.String(identifier), ua.Int16(namespace))


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))
