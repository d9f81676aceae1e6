#!/usr/bin/env python3
"""Validates the JSON the tools printed during a test run.

  json_check.py LOG SCHEMADIR
      LOG holds one line per document a tool printed on stdout with -j,
      "TOOL<TAB>DOCUMENT" (LIBIMG_TEST_JSON_LOG, tools/common.c json_finish).
      Each document is checked against SCHEMADIR/TOOL.json, an error object
      (a document whose "error" key holds an object) against
      SCHEMADIR/error.json; an imgctl event with an "error" string is no
      error object.  Fails (exit 1) naming the tool, the document and the
      violation; also when a tool has no schema file, a line is not JSON, or
      LOG is empty.

  json_check.py --schemas SCHEMADIR MANDIR
      Checks the schemas themselves: valid draft 2020-12 schemas, every
      property has a "description", every object with "properties" has
      "additionalProperties": false, and every key is
      named in the JSON OUTPUT section of MANDIR/TOOL.1 (error.json: in the
      JSON OUTPUT section of every tool's page).

Exit 77 (skip) when python3-jsonschema is not installed.
"""
import json
import os
import re
import sys

try:
    import jsonschema
except ImportError:
    print("python3-jsonschema is not installed (scripts/deps.sh)")
    sys.exit(77)

Validator = jsonschema.Draft202012Validator


def load_schema(schemadir, name, cache):
    if name not in cache:
        path = os.path.join(schemadir, name + ".json")
        if not os.path.exists(path):
            cache[name] = None
        else:
            with open(path) as f:
                schema = json.load(f)
            Validator.check_schema(schema)
            cache[name] = Validator(schema)
    return cache[name]


def short(doc, n=400):
    return doc if len(doc) <= n else doc[:n] + "..."


def check_log(log, schemadir):
    cache, fails, seen = {}, 0, {}
    with open(log, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    if not lines:
        print("%s: no JSON was logged (is the LIBIMG_TEST_JSON_LOG tap in json_finish?)" % log)
        return 1
    for no, line in enumerate(lines, 1):
        tool, sep, doc = line.partition("\t")
        if not sep:
            print("line %d: not TOOL<TAB>DOCUMENT: %s" % (no, short(line)))
            fails += 1
            continue
        try:
            value = json.loads(doc)
        except ValueError as e:
            print("line %d: %s printed text that is not JSON (%s): %s" % (no, tool, e, short(doc)))
            fails += 1
            continue
        name = "error" if isinstance(value, dict) and isinstance(value.get("error"), dict) else tool
        v = load_schema(schemadir, name, cache)
        if v is None:
            print("line %d: %s: no schema %s" % (no, tool, os.path.join(schemadir, name + ".json")))
            fails += 1
            continue
        seen[name] = seen.get(name, 0) + 1
        errs = sorted(v.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errs:
            fails += 1
            print("line %d: %s: the document does not match %s.json:" % (no, tool, name))
            for e in errs[:5]:
                path = "/".join(str(p) for p in e.absolute_path) or "(top)"
                print("    at %s: %s" % (path, e.message))
            print("    document: %s" % short(doc))
    print("%d documents checked (%s); %d do not match their schema" %
          (len(lines), ", ".join("%s %d" % kv for kv in sorted(seen.items())), fails))
    return 1 if fails else 0


def walk_props(schema, where, out):
    """Yields (path, key, subschema) for every property, recursively."""
    if isinstance(schema, dict):
        props = schema.get("properties")
        if isinstance(props, dict):
            if schema.get("additionalProperties") is not False:
                out.append(("%s: an object without \"additionalProperties\": false" % where))
        for k, v in schema.items():
            if k == "properties" and isinstance(v, dict):
                for name, sub in v.items():
                    yield where, name, sub
                    yield from walk_props(sub, where + "." + name, out)
            else:
                yield from walk_props(v, where + "/" + k, out)
    elif isinstance(schema, list):
        for i, v in enumerate(schema):
            yield from walk_props(v, "%s[%d]" % (where, i), out)


def man_json_section(path):
    with open(path) as f:
        text = f.read()
    m = re.search(r"^\.SH JSON OUTPUT\n(.*?)(?=^\.SH |\Z)", text, re.M | re.S)
    return m.group(1) if m else None


def check_schemas(schemadir, mandir):
    fails = []
    names = sorted(f[:-5] for f in os.listdir(schemadir) if f.endswith(".json"))
    tools = [n for n in names if n != "error"]
    if "error" not in names:
        fails.append("%s/error.json is missing" % schemadir)
    for name in names:
        path = os.path.join(schemadir, name + ".json")
        try:
            with open(path) as f:
                schema = json.load(f)
            Validator.check_schema(schema)
        except Exception as e:   # noqa: BLE001 - any reason is a failure
            fails.append("%s: not a valid draft 2020-12 schema: %s" % (path, e))
            continue
        if schema.get("$schema") != "https://json-schema.org/draft/2020-12/schema":
            fails.append("%s: \"$schema\" is not draft 2020-12" % path)
        problems = []
        keys = set()
        for where, key, sub in walk_props(schema, name, problems):
            keys.add(key)
            if not isinstance(sub, dict) or not sub.get("description"):
                problems.append("%s.%s: no \"description\"" % (where, key))
        fails += ["%s: %s" % (path, p) for p in problems]
        pages = tools if name == "error" else [name]
        for page in pages:
            man = os.path.join(mandir, page + ".1")
            if not os.path.exists(man):
                fails.append("%s: no man page %s" % (path, man))
                continue
            sec = man_json_section(man)
            if sec is None:
                fails.append("%s: no JSON OUTPUT section" % man)
                continue
            for key in sorted(keys):
                if not re.search(r"(?<![\w])" + re.escape(key) + r"(?![\w])", sec):
                    fails.append("%s: key %s (%s) is not in its JSON OUTPUT section" %
                                 (man, key, os.path.basename(path)))
    for f in fails:
        print(f)
    print("%d schemas checked, %d problems" % (len(names), len(fails)))
    return 1 if fails else 0


def main(argv):
    if len(argv) == 4 and argv[1] == "--schemas":
        return check_schemas(argv[2], argv[3])
    if len(argv) == 3:
        return check_log(argv[1], argv[2])
    print(__doc__.strip())
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
