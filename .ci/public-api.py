#!/usr/bin/env python3
"""The library's public API as sorted text lines, from rustdoc's JSON, so that a change to it
shows up as a diff against `tests/public-api.txt` and is a decision, not an accident.

    python3 .ci/public-api.py            # check: exit 1 and a diff when the API changed
    python3 .ci/public-api.py --bless    # accept the current API

Every public item reachable from the crate root is listed with its path: functions and
methods with their signatures, struct fields, enum variants (with their fields), trait
implementations (auto and blanket ones left out), and `#[non_exhaustive]` marks. Items marked
`#[doc(hidden)]` are outside the promise and are left out.
"""
import difflib
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNAPSHOT = os.path.join(ROOT, "tests", "public-api.txt")


def build():
    env = dict(os.environ, RUSTC_BOOTSTRAP="1")
    subprocess.run(
        ["cargo", "rustdoc", "--lib", "-q", "--no-default-features", "--features", "indicatif",
         "--", "-Z", "unstable-options", "--output-format", "json"],
        cwd=ROOT, env=env, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    with open(os.path.join(target, "doc", "haul.json")) as f:
        return json.load(f)


class Api:
    def __init__(self, doc):
        self.index = doc["index"]
        self.paths = doc["paths"]
        self.lines = set()
        self.seen = set()

    def item(self, id_):
        return self.index.get(str(id_))

    def ty(self, t):
        if t is None:
            return "()"
        (kind, v), = t.items()
        if kind == "resolved_path":
            name = v["path"].split("::")[-1]
            return name + self.args(v.get("args"))
        if kind == "primitive":
            return v
        if kind == "generic":
            return v
        if kind == "borrowed_ref":
            life = (v["lifetime"] + " ") if v.get("lifetime") else ""
            return "&" + life + ("mut " if v["is_mutable"] else "") + self.ty(v["type"])
        if kind == "tuple":
            return "(" + ", ".join(self.ty(x) for x in v) + ")"
        if kind == "slice":
            return "[" + self.ty(v) + "]"
        if kind == "array":
            return "[" + self.ty(v["type"]) + "; " + v["len"] + "]"
        if kind == "impl_trait":
            return "impl " + " + ".join(self.bound(b) for b in v)
        if kind == "dyn_trait":
            return "dyn " + " + ".join(self.poly(p) for p in v["traits"])
        if kind == "qualified_path":
            return self.ty(v["self_type"]) + "::" + v["name"]
        if kind == "raw_pointer":
            return ("*mut " if v["is_mutable"] else "*const ") + self.ty(v["type"])
        if kind == "function_pointer":
            sig = v["sig"]
            return "fn(" + ", ".join(self.ty(x[1]) for x in sig["inputs"]) + ") -> " + self.ty(sig["output"])
        return kind

    def args(self, a):
        if not a:
            return ""
        if "angle_bracketed" in a:
            parts = []
            for arg in a["angle_bracketed"]["args"]:
                if "type" in arg:
                    parts.append(self.ty(arg["type"]))
                elif "lifetime" in arg:
                    parts.append(arg["lifetime"])
                elif "const" in arg:
                    parts.append(str(arg["const"].get("expr")))
            for c in a["angle_bracketed"].get("constraints", []):
                binding = c.get("binding", {})
                if "equality" in binding and "type" in binding["equality"]:
                    parts.append(c["name"] + " = " + self.ty(binding["equality"]["type"]))
            return "<" + ", ".join(parts) + ">" if parts else ""
        if "parenthesized" in a:
            p = a["parenthesized"]
            out = "(" + ", ".join(self.ty(x) for x in p["inputs"]) + ")"
            return out + (" -> " + self.ty(p["output"]) if p.get("output") else "")
        return ""

    def poly(self, p):
        t = p["trait"]
        return t["path"].split("::")[-1] + self.args(t.get("args"))

    def bound(self, b):
        if "trait_bound" in b:
            return self.poly(b["trait_bound"])
        if "outlives" in b:
            return b["outlives"]
        return "?"

    def generics(self, g):
        params = []
        for p in g["params"]:
            kind = p["kind"]
            if "type" in kind and not kind["type"].get("is_synthetic"):
                bounds = kind["type"]["bounds"]
                params.append(p["name"] + (": " + " + ".join(self.bound(b) for b in bounds) if bounds else ""))
            elif "lifetime" in kind:
                params.append(p["name"])
            elif "const" in kind:
                params.append("const " + p["name"])
        where = []
        for w in g.get("where_predicates", []):
            if "bound_predicate" in w:
                bp = w["bound_predicate"]
                where.append(self.ty(bp["type"]) + ": " + " + ".join(self.bound(b) for b in bp["bounds"]))
        text = "<" + ", ".join(params) + ">" if params else ""
        return text, (" where " + ", ".join(where) if where else "")

    def fn(self, path, item):
        f = item["inner"]["function"]
        header = f["header"]
        quals = ("const " if header["is_const"] else "") + ("async " if header["is_async"] else "")
        gens, where = self.generics(f["generics"])
        inputs = []
        for name, t in f["sig"]["inputs"]:
            inputs.append(self.ty(t) if name == "self" else f"{name}: {self.ty(t)}")
        inputs = [("self" if i == "Self" else "&self" if i == "&Self" else "&mut self" if i == "&mut Self" else i) for i in inputs]
        out = f["sig"]["output"]
        ret = " -> " + self.ty(out) if out is not None else ""
        self.lines.add(f"pub {quals}fn {path}{gens}({', '.join(inputs)}){ret}{where}")

    def marks(self, item):
        attrs = json.dumps(item.get("attrs", []))
        return "#[non_exhaustive] " if "non_exhaustive" in attrs else ""

    def impls(self, path, ids):
        for impl_id in ids:
            impl = self.item(impl_id)
            if impl is None:
                continue
            inner = impl["inner"]["impl"]
            if inner.get("is_synthetic") or inner.get("blanket_impl"):
                continue
            trait = inner.get("trait")
            if trait:
                gens, where = self.generics(inner["generics"])
                self.lines.add(f"impl{gens} {self.poly({'trait': trait})} for {path}{where}")
                continue
            for member in inner["items"]:
                m = self.item(member)
                if m is None or m.get("visibility") != "public":
                    continue
                if "function" in m["inner"]:
                    self.fn(f"{path}::{m['name']}", m)
                elif "assoc_const" in m["inner"]:
                    self.lines.add(f"pub const {path}::{m['name']}: {self.ty(m['inner']['assoc_const']['type'])}")

    def fields(self, path, ids):
        for fid in ids:
            field = self.item(fid)
            if field and field.get("visibility") == "public":
                self.lines.add(f"pub {path}::{field['name']}: {self.ty(field['inner']['struct_field'])}")

    def walk(self, id_, path):
        item = self.item(id_)
        if item is None:
            external = self.paths.get(str(id_))
            if external:
                self.lines.add(f"pub use {path} = {'::'.join(external['path'])}")
            return
        (kind, inner), = item["inner"].items()
        key = (id_, path)
        if key in self.seen:
            return
        self.seen.add(key)
        if kind == "use":
            if inner.get("is_glob"):
                return
            target = inner.get("id")
            if target is None:
                self.lines.add(f"pub use {path} = {inner['source']}")
            else:
                self.walk(target, path)
            return
        if kind == "module":
            self.lines.add(f"pub mod {path}")
            for child in inner["items"]:
                c = self.item(child)
                name = (c or {}).get("name") or ((c or {}).get("inner", {}).get("use", {}) or {}).get("name")
                if c is not None and c.get("visibility") != "public":
                    continue
                self.walk(child, f"{path}::{name}")
            return
        marks = self.marks(item)
        if kind == "struct":
            gens, _ = self.generics(inner["generics"])
            self.lines.add(f"{marks}pub struct {path}{gens}")
            k = inner["kind"]
            if "plain" in k:
                self.fields(path, k["plain"]["fields"])
            elif "tuple" in k:
                for n, fid in enumerate(k["tuple"]):
                    if fid is not None:
                        self.lines.add(f"pub {path}::{n}: {self.ty(self.item(fid)['inner']['struct_field'])}")
            self.impls(path, inner["impls"])
        elif kind == "enum":
            gens, _ = self.generics(inner["generics"])
            self.lines.add(f"{marks}pub enum {path}{gens}")
            for vid in inner["variants"]:
                v = self.item(vid)
                vk = v["inner"]["variant"]["kind"]
                vmarks = self.marks(v)
                if vk == "plain":
                    self.lines.add(f"{vmarks}pub {path}::{v['name']}")
                elif "tuple" in vk:
                    types = [self.ty(self.item(f)["inner"]["struct_field"]) for f in vk["tuple"] if f is not None]
                    self.lines.add(f"{vmarks}pub {path}::{v['name']}({', '.join(types)})")
                elif "struct" in vk:
                    self.lines.add(f"{vmarks}pub {path}::{v['name']} {{ .. }}")
                    for fid in vk["struct"]["fields"]:
                        f = self.item(fid)
                        self.lines.add(f"pub {path}::{v['name']}::{f['name']}: {self.ty(f['inner']['struct_field'])}")
            self.impls(path, inner["impls"])
        elif kind == "function":
            self.fn(path, item)
        elif kind == "trait":
            self.lines.add(f"pub trait {path}")
            for m in inner["items"]:
                mi = self.item(m)
                if mi and "function" in mi["inner"]:
                    self.fn(f"{path}::{mi['name']}", mi)
        elif kind == "type_alias":
            self.lines.add(f"pub type {path} = {self.ty(inner['type'])}")
        elif kind == "constant":
            self.lines.add(f"pub const {path}: {self.ty(inner['type'])}")
        else:
            self.lines.add(f"pub {kind} {path}")


def main():
    doc = build()
    api = Api(doc)
    api.walk(doc["root"], "haul")
    current = sorted(api.lines)
    text = "\n".join(current) + "\n"
    if "--bless" in sys.argv:
        with open(SNAPSHOT, "w") as f:
            f.write(text)
        print(f"{len(current)} lines written to {os.path.relpath(SNAPSHOT, ROOT)}")
        return 0
    try:
        with open(SNAPSHOT) as f:
            expected = f.read()
    except FileNotFoundError:
        expected = ""
    if expected == text:
        print(f"public API unchanged ({len(current)} lines)")
        return 0
    sys.stdout.writelines(difflib.unified_diff(
        expected.splitlines(keepends=True), text.splitlines(keepends=True),
        "tests/public-api.txt", "the code"))
    print("\nThe public API changed. If that is intended, record it in CHANGELOG.md (a removal "
          "or a changed signature is a breaking change) and run: python3 .ci/public-api.py --bless",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
