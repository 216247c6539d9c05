"""The few Kubernetes protobuf bodies kubectl's typed client sends, decoded to JSON objects.

``kubectl create namespace|configmap|secret|serviceaccount|token`` post protobuf
(``application/vnd.kubernetes.protobuf``: the magic ``k8s\\0`` then a ``runtime.Unknown``
wrapping the object). Only these kinds are understood, with the fields those commands set;
anything else is answered 415 and the user applies the object as YAML instead.
"""

from __future__ import annotations

import base64
from typing import Any, Callable, Dict, List, Optional, Tuple

Obj = Dict[str, Any]
MAGIC = b"k8s\x00"
# A field: (name, decoder); decoders take the raw field value (int or bytes).
Fields = Dict[int, Tuple[str, Callable[[Any], Any]]]


class Undecodable(ValueError):
    pass


def _varint(data: bytes, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise Undecodable("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> List[Tuple[int, Any]]:
    """(field number, value) pairs: ints for varints/fixed, bytes for length-delimited."""
    out: List[Tuple[int, Any]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise Undecodable("wire type %d" % wire)
        out.append((number, value))
    return out


def _string(value: Any) -> str:
    return bytes(value).decode()


def _b64(value: Any) -> str:
    return base64.b64encode(bytes(value)).decode()


def _bool(value: Any) -> bool:
    return bool(value)


def _map(value_decoder: Callable[[Any], Any]) -> Callable[[Any], Tuple[str, Any]]:
    def entry(raw: Any) -> Tuple[str, Any]:
        parts = dict(fields(bytes(raw)))
        return _string(parts.get(1, b"")), value_decoder(parts.get(2, b""))

    return entry


def _message(schema: Fields) -> Callable[[Any], Obj]:
    def decode(raw: Any) -> Obj:
        obj: Obj = {}
        for number, value in fields(bytes(raw)):
            if number not in schema:
                continue
            name, decoder = schema[number]
            decoded = decoder(value)
            if name.endswith("[]"):
                obj.setdefault(name[:-2], []).append(decoded)
            elif name.endswith("{}"):
                key, item = decoded
                obj.setdefault(name[:-2], {})[key] = item
            else:
                obj[name] = decoded
        return obj

    return decode


OBJECT_META = _message(
    {
        1: ("name", _string),
        2: ("generateName", _string),
        3: ("namespace", _string),
        11: ("labels{}", _map(_string)),
        12: ("annotations{}", _map(_string)),
        14: ("finalizers[]", _string),
    }
)
KINDS: Dict[str, Callable[[Any], Obj]] = {
    "Namespace": _message(
        {1: ("metadata", OBJECT_META), 2: ("spec", _message({1: ("finalizers[]", _string)}))}
    ),
    "ConfigMap": _message(
        {
            1: ("metadata", OBJECT_META),
            2: ("data{}", _map(_string)),
            3: ("binaryData{}", _map(_b64)),
            4: ("immutable", _bool),
        }
    ),
    "Secret": _message(
        {
            1: ("metadata", OBJECT_META),
            2: ("data{}", _map(_b64)),
            3: ("type", _string),
            4: ("stringData{}", _map(_string)),
            5: ("immutable", _bool),
        }
    ),
    "ServiceAccount": _message({1: ("metadata", OBJECT_META)}),
    "TokenRequest": _message(
        {
            1: ("metadata", OBJECT_META),
            2: (
                "spec",
                _message(
                    {
                        1: ("audiences[]", _string),
                        3: (
                            "boundObjectRef",
                            _message(
                                {
                                    1: ("kind", _string),
                                    2: ("apiVersion", _string),
                                    3: ("name", _string),
                                    4: ("uid", _string),
                                }
                            ),
                        ),
                        4: ("expirationSeconds", int),
                    }
                ),
            ),
        }
    ),
}


def decode(body: bytes) -> Optional[Obj]:
    """The object in a protobuf request body, or None for a kind not understood here."""
    if not body.startswith(MAGIC):
        raise Undecodable("no k8s protobuf magic")
    unknown = dict(fields(body[len(MAGIC) :]))
    type_meta = dict(fields(bytes(unknown.get(1, b""))))
    api_version, kind = _string(type_meta.get(1, b"")), _string(type_meta.get(2, b""))
    decoder = KINDS.get(kind)
    if decoder is None:
        return None
    obj = decoder(unknown.get(2, b""))
    obj["apiVersion"], obj["kind"] = api_version, kind
    return obj
