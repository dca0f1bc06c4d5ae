#!/usr/bin/env python3
"""Generates api/src/proto/kinds.rs: the protobuf wire schema of the kinds kubesim serves.

The table is derived from the Kubernetes API definitions, which are read from checkouts
of the Go modules k8s.io/api and k8s.io/apimachinery at the same release tag (v0.36.3
for the committed table):

  * each package's generated.proto gives, per message, the field numbers and wire types;
  * each package's Go structs give, per field, the JSON name (or `,inline`), the
    omitempty / omitzero options and whether the Go field is a pointer, which decide
    how an unset or zero field shows in the JSON the apiserver would write.

Only the messages reachable from ROOTS are emitted. The well-known apimachinery types
with their own JSON form (Time, MicroTime, Quantity, IntOrString, FieldsV1) become
dedicated types instead of messages; any other message outside PACKAGES (such as
runtime.RawExtension) stops the generator until the decoder learns it.

Usage:
  tools/gen-proto-schema.py --release v0.36.3 --api DIR --apimachinery DIR \
      > api/src/proto/kinds.rs
  rustfmt --edition 2021 api/src/proto/kinds.rs
"""

import argparse
import os
import re
import sys

API_PREFIX = "k8s.io.api."
META = "k8s.io.apimachinery.pkg.apis.meta.v1"

# proto package -> (module root key, directory inside that module)
PACKAGES = {
    "k8s.io.api.core.v1": ("api", "core/v1"),
    "k8s.io.api.apps.v1": ("api", "apps/v1"),
    "k8s.io.api.discovery.v1": ("api", "discovery/v1"),
    "k8s.io.api.networking.v1": ("api", "networking/v1"),
    "k8s.io.api.autoscaling.v1": ("api", "autoscaling/v1"),
    META: ("apimachinery", "pkg/apis/meta/v1"),
}

# Messages whose JSON form is not their protobuf shape.
SPECIAL = {
    META + ".Time": "Time",
    META + ".MicroTime": "MicroTime",
    META + ".FieldsV1": "FieldsV1",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
}

SCALARS = {"string": "String", "bool": "Bool", "int32": "Int32", "int64": "Int64", "bytes": "Bytes"}

# (apiVersion, kind, proto message) of every object a client may send.
ROOTS = [
    ("v1", "Namespace", "k8s.io.api.core.v1.Namespace"),
    ("v1", "Node", "k8s.io.api.core.v1.Node"),
    ("v1", "Pod", "k8s.io.api.core.v1.Pod"),
    ("v1", "Service", "k8s.io.api.core.v1.Service"),
    ("v1", "Endpoints", "k8s.io.api.core.v1.Endpoints"),
    ("v1", "ConfigMap", "k8s.io.api.core.v1.ConfigMap"),
    ("v1", "Secret", "k8s.io.api.core.v1.Secret"),
    ("v1", "Event", "k8s.io.api.core.v1.Event"),
    ("v1", "Binding", "k8s.io.api.core.v1.Binding"),
    ("apps/v1", "Deployment", "k8s.io.api.apps.v1.Deployment"),
    ("apps/v1", "ReplicaSet", "k8s.io.api.apps.v1.ReplicaSet"),
    ("discovery.k8s.io/v1", "EndpointSlice", "k8s.io.api.discovery.v1.EndpointSlice"),
    ("networking.k8s.io/v1", "Ingress", "k8s.io.api.networking.v1.Ingress"),
    ("networking.k8s.io/v1", "IngressClass", "k8s.io.api.networking.v1.IngressClass"),
    ("networking.k8s.io/v1", "NetworkPolicy", "k8s.io.api.networking.v1.NetworkPolicy"),
    ("autoscaling/v1", "Scale", "k8s.io.api.autoscaling.v1.Scale"),
] + [
    # Delete bodies carry the group-version of the client that sent them.
    (gv, "DeleteOptions", META + ".DeleteOptions")
    for gv in ["v1", "apps/v1", "discovery.k8s.io/v1", "networking.k8s.io/v1", "autoscaling/v1", "meta.k8s.io/v1"]
]


def fail(msg):
    sys.exit("gen-proto-schema: " + msg)


def parse_proto(path, package):
    """message name -> list of (label, type, name, number); types fully qualified."""
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"//[^\n]*", "", text)
    messages = {}
    for m in re.finditer(r"^message (\w+) \{(.*?)^\}", text, re.S | re.M):
        fields = []
        for line in m.group(2).split(";"):
            line = " ".join(line.split())
            if not line:
                continue
            fm = re.fullmatch(r"(optional|repeated) ([\w.]+) (\w+) = (\d+)", line)
            mm = re.fullmatch(r"map<(\w+), ([\w.]+)> (\w+) = (\d+)", line)
            if fm:
                label, ty, name, num = fm.groups()
            elif mm:
                key, ty, name, num = mm.groups()
                if key != "string":
                    fail(f"{package}.{m.group(1)}: map key {key} is not supported")
                label = "map"
            else:
                fail(f"{package}.{m.group(1)}: cannot parse {line!r}")
            if ty.startswith("."):
                ty = ty[1:]
            elif ty not in SCALARS:
                ty = f"{package}.{ty}"
            fields.append((label, ty, name, int(num)))
        messages[f"{package}.{m.group(1)}"] = fields
    return messages


TAG_RE = re.compile(r'(\w+):"([^"]*)"')


def parse_go_structs(directory):
    """struct name -> list of Go fields in declaration order."""
    structs = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".go") or name.endswith("_test.go"):
            continue
        if name.startswith("zz_generated") or name.startswith("generated"):
            continue
        text = open(os.path.join(directory, name), encoding="utf-8").read()
        text = re.sub(r"^\s*/\*.*?\*/", "", text, flags=re.S | re.M)
        for m in re.finditer(r"^type (\w+) struct \{\n(.*?)^\}", text, re.S | re.M):
            fields = []
            for line in m.group(2).splitlines():
                line = line.split("//")[0] if "`" not in line else line
                line = line.strip()
                if not line or line.startswith("//"):
                    continue
                if "`" not in line:
                    fields.append({"untagged": line})
                    continue
                decl, tag = line.split("`")[0].split(), line.split("`")[1]
                tags = dict(TAG_RE.findall(tag))
                go_type = decl[-1]
                fields.append({"type": go_type, "embedded": len(decl) == 1, "tags": tags})
            # A struct declared in several files (behind build tags) is unusable here.
            structs[m.group(1)] = None if m.group(1) in structs else fields
    return structs


def rust_ident(full):
    package, name = full.rsplit(".", 1)
    if package.startswith(API_PREFIX):
        prefix = package[len(API_PREFIX):].replace(".", "_")
    elif package == META:
        prefix = "meta_v1"
    else:
        fail(f"no identifier for {full}")
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return f"{prefix}_{snake}".upper()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--release", required=True, help="the tag both checkouts are at, e.g. v0.36.3")
    ap.add_argument("--api", required=True, help="checkout of k8s.io/api")
    ap.add_argument("--apimachinery", required=True, help="checkout of k8s.io/apimachinery")
    args = ap.parse_args()
    roots = {"api": args.api, "apimachinery": args.apimachinery}

    messages, go = {}, {}
    for package, (module, sub) in PACKAGES.items():
        directory = os.path.join(roots[module], sub)
        messages.update(parse_proto(os.path.join(directory, "generated.proto"), package))
        for struct, fields in parse_go_structs(directory).items():
            go[f"{package}.{struct}"] = fields

    # Reachable messages, in a stable order.
    order, seen, todo = [], set(), [r[2] for r in ROOTS]
    while todo:
        name = todo.pop(0)
        if name in seen or name in SPECIAL:
            continue
        if name not in messages:
            fail(f"message {name} is outside PACKAGES and has no special decoder")
        seen.add(name)
        order.append(name)
        todo.extend(ty for _, ty, _, _ in messages[name] if ty not in SCALARS)
    order.sort()

    out = []
    out.append("//! The protobuf wire schema of every object kubesim decodes, derived from the")
    out.append(f"//! Kubernetes API definitions (k8s.io/api and k8s.io/apimachinery {args.release}):")
    out.append("//! field numbers and wire types from their generated.proto files, JSON names,")
    out.append("//! omitempty and pointer-ness from their Go structs. Generated by")
    out.append("//! `tools/gen-proto-schema.py`; do not edit by hand.")
    out.append("")
    header = len(out)
    out.append("/// The objects a client may send, by apiVersion and kind.")
    out.append("pub(super) static ROOTS: &[Root] = &[")
    for gv, kind, msg in ROOTS:
        out.append(f'    Root {{ api_version: "{gv}", kind: "{kind}", message: &{rust_ident(msg)} }},')
    out.append("];")

    for name in order:
        proto_fields = {num: (label, ty, pname) for label, ty, pname, num in messages[name]}
        if go.get(name) is None:
            fail(f"no single Go struct for {name}")
        rows, used = [], set()
        for gofield in go[name]:
            if "untagged" in gofield:
                fail(f"{name}: Go field without tags: {gofield['untagged']!r}")
            tags = gofield["tags"]
            if "protobuf" not in tags:
                if tags.get("json") == ",inline" and gofield["type"].endswith("TypeMeta"):
                    continue
                if tags.get("json") == "-":
                    continue
                fail(f"{name}: Go field {gofield} has no protobuf tag")
            ptag = tags["protobuf"].split(",")
            num = int(ptag[1])
            pname = next((p[5:] for p in ptag if p.startswith("name=")), None)
            if num not in proto_fields:
                fail(f"{name}: Go field number {num} not in generated.proto")
            label, ty, proto_name = proto_fields[num]
            if pname is not None and pname != proto_name:
                fail(f"{name}: field {num} is {proto_name} in proto, {pname} in Go")
            used.add(num)
            json_opts = tags.get("json", "").split(",")
            json_name = json_opts[0]
            if json_name == "-":
                continue
            inline = "inline" in json_opts[1:]
            pointer = gofield["type"].startswith("*")
            if inline:
                if json_name or pointer or label != "optional" or ty in SCALARS or ty in SPECIAL:
                    fail(f"{name}: unsupported inline field {proto_name}")
            elif not json_name:
                fail(f"{name}: field {proto_name} has no JSON name")
            if label == "map":
                shape = "Map"
            elif label == "repeated":
                shape = "Repeated"
            else:
                shape = "Pointer" if pointer else "Value"
            if "omitzero" in json_opts[1:]:
                omit = "Zero"
            elif "omitempty" in json_opts[1:]:
                omit = "Empty"
            else:
                omit = "Never"
            if ty in SCALARS:
                rty = SCALARS[ty]
            elif ty in SPECIAL:
                rty = SPECIAL[ty]
            else:
                rty = f"Msg(&{rust_ident(ty)})"
            rows.append(f'        f({num}, "{json_name}", {rty}, {shape}, {omit}),')
        missing = set(proto_fields) - used
        if missing:
            fail(f"{name}: proto fields {sorted(missing)} have no Go field")
        short = name.rsplit(".", 1)[1]
        out.append("")
        out.append(f"pub(super) static {rust_ident(name)}: Message = Message {{")
        out.append(f'    name: "{short}",')
        out.append("    fields: &[")
        out.extend(rows)
        out.append("    ],")
        out.append("};")
    body = "\n".join(out[header:])

    def used(names):
        return ", ".join(n for n in names if re.search(rf"\b{n}\b", body))

    types = ["Bool", "Bytes", "Int32", "Int64", "String", "Msg"] + sorted(SPECIAL.values())
    out[header:header] = [
        f"use super::schema::Label::{{{used(['Map', 'Pointer', 'Repeated', 'Value'])}}};",
        f"use super::schema::Omit::{{{used(['Empty', 'Never', 'Zero'])}}};",
        f"use super::schema::Type::{{{used(sorted(types))}}};",
        "use super::schema::{f, Message, Root};",
        "",
    ]
    print("\n".join(out))


if __name__ == "__main__":
    main()
