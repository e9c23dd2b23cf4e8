"""Protobuf schemas: compiled with protoc (grpcio-tools), then compared field by field for BACKWARD compatibility.

BACKWARD means the new schema can read data written with the old one. Fields are matched by
number, so renaming a field is compatible; adding or removing a field is compatible (proto3
readers skip unknown fields and default missing ones). Types are compared in Confluent's wire
groups (int32/int64/uint32/uint64/bool/enum; sint32/sint64; string/bytes; fixed32/sfixed32;
fixed64/sfixed64; float; double; messages by name; maps by key and value).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2

_FD = descriptor_pb2.FieldDescriptorProto
_GROUPS: dict[int, str] = {
    **dict.fromkeys([_FD.TYPE_INT32, _FD.TYPE_INT64, _FD.TYPE_UINT32, _FD.TYPE_UINT64, _FD.TYPE_BOOL], "varint"),
    _FD.TYPE_ENUM: "varint",
    **dict.fromkeys([_FD.TYPE_SINT32, _FD.TYPE_SINT64], "zigzag"),
    **dict.fromkeys([_FD.TYPE_STRING, _FD.TYPE_BYTES], "length-delimited"),
    **dict.fromkeys([_FD.TYPE_FIXED32, _FD.TYPE_SFIXED32], "fixed32"),
    **dict.fromkeys([_FD.TYPE_FIXED64, _FD.TYPE_SFIXED64], "fixed64"),
    _FD.TYPE_FLOAT: "float",
    _FD.TYPE_DOUBLE: "double",
    _FD.TYPE_GROUP: "group",
}
_Messages = dict[str, descriptor_pb2.DescriptorProto]
_Context = tuple[_Messages, str, _Messages, str]  # new messages, new package, old messages, old package


class ProtoError(ValueError):
    """The text is not a valid .proto file; the message is protoc's."""


@lru_cache(maxsize=256)
def _compile(text: str) -> bytes:
    # protoc runs as a child process: ~50 ms, and its diagnostics go to our pipe, not the server's stderr.
    include = resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory(prefix="registry-proto-") as tmp:
        Path(tmp, "schema.proto").write_text(text)
        out = Path(tmp, "schema.pb")
        cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp}", f"-I{include}", f"--descriptor_set_out={out}"]
        done = subprocess.run([*cmd, "schema.proto"], capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            lines = (done.stderr + done.stdout).replace(f"{tmp}/", "").strip().splitlines()
            # protoc's own diagnostics name the file; absl logging noise around them does not help.
            raise ProtoError(
                "\n".join([ln for ln in lines if ln.startswith("schema.proto")] or lines) or "protoc failed"
            )
        return out.read_bytes()


def compile_proto(text: str) -> descriptor_pb2.FileDescriptorProto:
    """The descriptor of a .proto text; raises ProtoError with protoc's message when it does not compile."""
    files = descriptor_pb2.FileDescriptorSet.FromString(_compile(text)).file
    return files[len(files) - 1]


def _messages(fdp: descriptor_pb2.FileDescriptorProto) -> _Messages:
    found: _Messages = {}

    def walk(prefix: str, msgs: list[descriptor_pb2.DescriptorProto]) -> None:
        for m in msgs:
            found[prefix + m.name] = m
            walk(f"{prefix}{m.name}.", list(m.nested_type))

    walk("", list(fdp.message_type))
    return found


def _local(type_name: str, package: str) -> str:
    prefix = f".{package}." if package else "."
    return type_name[len(prefix) :] if type_name.startswith(prefix) else type_name.lstrip(".")


def _type(f: descriptor_pb2.FieldDescriptorProto, msgs: _Messages, package: str) -> tuple[str, str]:
    """(group compared for compatibility, name shown in messages) of a field's type."""
    if f.type == _FD.TYPE_MESSAGE:
        name = _local(f.type_name, package)
        entry = msgs.get(name)
        if entry is not None and entry.options.map_entry:
            (k_group, k_text), (v_group, v_text) = (_type(e, msgs, package) for e in entry.field)
            return f"map<{k_group},{v_group}>", f"map<{k_text}, {v_text}>"
        return f"message {name}", name
    text = _local(f.type_name, package) if f.type == _FD.TYPE_ENUM else _FD.Type.Name(f.type)[5:].lower()
    return _GROUPS[f.type], text


def _oneof(m: descriptor_pb2.DescriptorProto, f: descriptor_pb2.FieldDescriptorProto) -> str | None:
    # proto3 `optional` is a synthetic one-field oneof: presence only, not a real oneof.
    if not f.HasField("oneof_index") or f.proto3_optional:
        return None
    return m.oneof_decl[f.oneof_index].name


def _compare_message(
    name: str, new: descriptor_pb2.DescriptorProto, old: descriptor_pb2.DescriptorProto, ctx: _Context
) -> list[str]:
    new_msgs, new_pkg, old_msgs, old_pkg = ctx
    issues: list[str] = []
    new_fields = {f.number: f for f in new.field}
    old_fields = {f.number: f for f in old.field}
    old_oneofs = {o.name for o in old.oneof_decl}
    moved_to_new_oneof: dict[str, list[int]] = {}
    for number, of in old_fields.items():
        nf = new_fields.get(number)
        where = f"{name} field {number} '{of.name if nf is None else nf.name}'"
        if nf is None:
            if _oneof(old, of):
                issues.append(f"{where}: removed from oneof '{_oneof(old, of)}'")
            continue
        (old_group, old_text), (new_group, new_text) = _type(of, old_msgs, old_pkg), _type(nf, new_msgs, new_pkg)
        if old_group != new_group:
            issues.append(f"{where}: type changed from {old_text} to {new_text}")
        elif (of.label == _FD.LABEL_REPEATED) != (nf.label == _FD.LABEL_REPEATED):
            labels = ("repeated", "singular") if of.label == _FD.LABEL_REPEATED else ("singular", "repeated")
            issues.append(f"{where}: label changed from {labels[0]} to {labels[1]}")
        if nf.label == _FD.LABEL_REQUIRED and of.label != _FD.LABEL_REQUIRED:
            issues.append(f"{where}: became required")
        old_oneof, new_oneof = _oneof(old, of), _oneof(new, nf)
        if new_oneof and old_oneof != new_oneof:
            if new_oneof in old_oneofs:
                issues.append(f"{where}: moved into existing oneof '{new_oneof}'")
            else:
                moved_to_new_oneof.setdefault(new_oneof, []).append(number)
    for number, nf in new_fields.items():
        if number not in old_fields and nf.label == _FD.LABEL_REQUIRED:
            issues.append(f"{name} field {number} '{nf.name}': required field added")
    for oneof, numbers in moved_to_new_oneof.items():
        if len(numbers) > 1:  # one field alone may become a oneof; several would clash on old data
            issues.append(f"{name}: existing fields {', '.join(map(str, numbers))} moved into new oneof '{oneof}'")
    return issues


def backward_issues(new_text: str, old_text: str) -> list[str]:
    """Why data written with `old_text` cannot be read with `new_text`; empty when it can."""
    new, old = compile_proto(new_text), compile_proto(old_text)
    issues = []
    if new.package != old.package:
        issues.append(f"package changed from '{old.package}' to '{new.package}'")
    new_msgs, old_msgs = _messages(new), _messages(old)
    ctx = (new_msgs, new.package, old_msgs, old.package)
    for name, old_msg in old_msgs.items():
        new_msg = new_msgs.get(name)
        if old_msg.options.map_entry:  # compared through the map field that uses it
            continue
        if new_msg is None:
            issues.append(f"message '{name}' removed or renamed")
            continue
        issues.extend(_compare_message(name, new_msg, old_msg, ctx))
    return issues
