"""``derms-edge discover --opcua``: browse a server's Objects for Variables, print them and a
configuration guessed from their names.

The standard Server object and everything else in namespace 0 is skipped; references are
followed forward and hierarchically (Organizes, HasComponent, HasProperty, ...).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIdNames, ObjectIds

from derms_edge.devices.opcua.connection import (
    Target,
    discard,
    node_ref,
    open_client,
    translate_errors,
)
from derms_edge.devices.opcua.skeleton import Variable, listing, render, skeletons
from derms_edge.errors import DeviceError

MAX_DEPTH = 10
"""Objects nested deeper than this under Objects are not browsed."""
MAX_NODES = 20_000
"""Browsing stops after this many nodes (a server may expose a huge address space)."""
BATCH = 500
"""Nodes per Browse or Read request (servers limit both)."""
_CURRENT_READ, _CURRENT_WRITE = 1 << 0, 1 << 1


def _plain(node_id: ua.NodeId) -> ua.NodeId:
    """A browse result's (expanded) node id as a plain one, usable as a dict key and in reads."""
    return ua.NodeId(node_id.Identifier, node_id.NamespaceIndex, node_id.NodeIdType)


async def _children(
    client: Client, parents: Sequence[ua.NodeId]
) -> list[list[ua.ReferenceDescription]]:
    """The Object and Variable children of each parent (forward hierarchical references)."""
    found: list[list[ua.ReferenceDescription]] = []
    for start in range(0, len(parents), BATCH):
        params = ua.BrowseParameters()
        params.RequestedMaxReferencesPerNode = 0
        params.NodesToBrowse = [
            ua.BrowseDescription(
                NodeId=parent,
                BrowseDirection=ua.BrowseDirection.Forward,
                ReferenceTypeId=ua.NodeId(ua.Int32(ObjectIds.HierarchicalReferences)),
                IncludeSubtypes=True,
                NodeClassMask=ua.UInt32(int(ua.NodeClass.Object) | int(ua.NodeClass.Variable)),
                ResultMask=ua.UInt32(int(ua.BrowseResultMask.All)),
            )
            for parent in parents[start : start + BATCH]
        ]
        for result in await client.uaclient.browse(params):
            references = list(result.References)
            point = result.ContinuationPoint
            while point:
                more = await client.uaclient.browse_next(
                    ua.BrowseNextParameters(ContinuationPoints=[point])
                )
                references += more[0].References
                point = more[0].ContinuationPoint
            found.append(references)
    return found


async def _walk(client: Client) -> list[tuple[ua.NodeId, tuple[str, ...]]]:
    """Every Variable under Objects outside namespace 0, with its browse path."""
    objects = ua.NodeId(ua.Int32(ObjectIds.ObjectsFolder))
    level: list[tuple[ua.NodeId, tuple[str, ...]]] = [(objects, ())]
    seen = {objects}
    variables = []
    for _ in range(MAX_DEPTH):
        if not level or len(seen) > MAX_NODES:
            break
        following = []
        children = await _children(client, [node for node, _ in level])
        for (_, path), references in zip(level, children, strict=True):
            for reference in references:
                node = _plain(reference.NodeId)
                remote = getattr(reference.NodeId, "ServerIndex", 0)  # an ExpandedNodeId elsewhere
                if node.NamespaceIndex == 0 or node in seen or remote:
                    continue
                seen.add(node)
                child_path = (*path, reference.BrowseName.Name or str(node.Identifier))
                if reference.NodeClass == ua.NodeClass.Variable:
                    variables.append((node, child_path))
                following.append((node, child_path))
        level = following
    return variables


async def _read(
    client: Client, nodes: Sequence[ua.NodeId], attributes: Sequence[AttributeIds]
) -> list[list[ua.DataValue]]:
    """Several attributes of many nodes, in batches: one list of values per node."""
    values: list[ua.DataValue] = []
    per_request = max(1, BATCH // len(attributes))
    for start in range(0, len(nodes), per_request):
        params = ua.ReadParameters()
        params.NodesToRead = [
            ua.ReadValueId(NodeId=node, AttributeId=ua.UInt32(attribute))
            for node in nodes[start : start + per_request]
            for attribute in attributes
        ]
        values += await client.uaclient.read(params)
    n = len(attributes)
    return [values[i : i + n] for i in range(0, len(values), n)]


def _value(data: ua.DataValue) -> object:
    if data.Value is None or (data.StatusCode is not None and data.StatusCode.is_bad()):
        return None
    return data.Value.Value


async def _type_names(client: Client, type_ids: Sequence[object]) -> dict[ua.NodeId, str]:
    """The names of the data types: built-in ones from the standard, others as browsed."""
    names: dict[ua.NodeId, str] = {}
    others = []
    for type_id in type_ids:
        if not isinstance(type_id, ua.NodeId) or type_id in names:
            continue
        if type_id.NamespaceIndex == 0 and isinstance(type_id.Identifier, int):
            names[type_id] = ObjectIdNames.get(type_id.Identifier, f"i={type_id.Identifier}")
        elif type_id not in others:
            others.append(type_id)
    for type_id, (browse_name,) in zip(
        others, await _read(client, others, [AttributeIds.BrowseName]), strict=True
    ):
        name = _value(browse_name)
        names[type_id] = name.Name if isinstance(name, ua.QualifiedName) else str(type_id)
    return names


async def browse(target: Target) -> list[Variable]:
    """Every Variable under Objects (outside namespace 0), in browse order.

    DeviceError when the server cannot be reached or refuses the session.
    """
    client = await open_client(target)
    try:
        with translate_errors(target, "browsing"):
            namespaces: list[str] = await client.get_namespace_array()
            found = await _walk(client)
            nodes = [node for node, _ in found]
            attributes = await _read(
                client,
                nodes,
                [AttributeIds.DataType, AttributeIds.AccessLevel, AttributeIds.UserAccessLevel],
            )
            types = await _type_names(client, [_value(a[0]) for a in attributes])
    finally:
        await discard(client)
    variables = []
    for (node, path), (data_type, access, user_access) in zip(found, attributes, strict=True):
        type_id = _value(data_type)
        level = _level(access) & _level(user_access, default=0xFF)
        variables.append(
            Variable(
                node_id=str(node_ref(node, namespaces)),
                path=path,
                data_type=types.get(type_id, "?") if isinstance(type_id, ua.NodeId) else "?",
                readable=bool(level & _CURRENT_READ),
                writable=bool(level & _CURRENT_WRITE),
            )
        )
    return variables


def _level(data: ua.DataValue, default: int = 0) -> int:
    value = _value(data)
    return value if isinstance(value, int) else default


async def discover(target: Target, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the variables and the configuration skeleton; the exit status (0 found, 1 not).

    ``out`` and ``err`` default to the standard streams of the moment.
    """
    out, err = out or sys.stdout, err or sys.stderr
    try:
        variables = await browse(target)
    except DeviceError as error:
        print(error, file=err)
        return 1
    if not variables:
        print(f"{target.name}: {target.endpoint}: no variables under Objects", file=err)
        return 1
    print(f"# {len(variables)} variables at {target.endpoint}", file=out)
    for line in listing(variables):
        print(f"# {line}", file=out)
    print(file=out)
    fallback = target.endpoint.rstrip("/").rsplit("/", 1)[-1]
    out.write(
        render(
            target.endpoint,
            skeletons(variables, fallback),
            security=target.security,
            username=target.username,
        )
    )
    return 0
